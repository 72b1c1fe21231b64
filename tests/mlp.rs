//! Linear and Mlp against f64 references, finite differences, bf16 vs f32, Split-SGD
//! exactness, thread-count determinism and shape errors.

use dlrm_kernels::blocked::Blocked;
use dlrm_kernels::kernels::Element;
use dlrm_kernels::linear::{Activation, Blocking, Linear, LinearConfig, PreActGrad};
use dlrm_kernels::mlp::{InputGrad, Mlp, MlpConfig};
use dlrm_kernels::optim::DenseUpdate;
use dlrm_kernels::rng::Rng;
use dlrm_kernels::{DType, Error, bf16};
use proptest::prelude::*;

fn rand_vec(rng: &mut Rng, len: usize, scale: f32) -> Vec<f32> {
    (0..len).map(|_| rng.uniform_in(-scale, scale)).collect()
}

fn sgd(lr: f32) -> DenseUpdate {
    DenseUpdate::Sgd { lr }
}

/// `dy` as the gradient before the activation of a ReLU (or activation-free) layer, its
/// values unchanged: the ReLU's derivative at outputs that are all positive is 1.
fn unmasked<'a, T: Element>(layer: &Linear<T>, dy: &'a mut Blocked<T>) -> PreActGrad<'a, T> {
    assert_ne!(layer.config().activation, Activation::Sigmoid);
    let (rows, cols) = (dy.rows(), dy.cols());
    let ones = vec![1.0; rows * cols];
    let y = Blocked::from_row_major(&ones, rows, cols, dy.block_rows(), dy.block_cols()).unwrap();
    layer.activation_backward(&y, dy).unwrap()
}

/// Values as the layer sees them (rounded to T).
fn as_t<T: Element>(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| T::from_f32(x).to_f32() as f64).collect()
}

/// Weights as the matmuls see them: bf16 layers use the truncated upper half.
fn matmul_weights<T: Element>(w: &[f32]) -> Vec<f64> {
    w.iter()
        .map(|&v| match T::DTYPE {
            DType::Bf16 => f32::from_bits(v.to_bits() & 0xffff_0000) as f64,
            DType::F32 => v as f64,
        })
        .collect()
}

fn act64(act: Activation, x: f64) -> f64 {
    match act {
        Activation::None => x,
        Activation::Relu => x.max(0.0),
        Activation::Sigmoid => 1.0 / (1.0 + (-x).exp()),
    }
}

#[derive(Debug)]
struct Case {
    n: usize,
    c: usize,
    k: usize,
    blocking: Blocking,
    act: Activation,
    seed: u64,
}

fn case() -> impl Strategy<Value = Case> {
    let dim = || {
        prop_oneof![
            prop::sample::select(vec![1usize, 13, 16, 17, 33, 64]),
            1usize..=70
        ]
    };
    (
        (dim(), dim(), dim()),
        (1usize..=70, 1usize..=70, 1usize..=70),
        prop::sample::select(vec![
            Activation::None,
            Activation::Relu,
            Activation::Sigmoid,
        ]),
        any::<u64>(),
    )
        .prop_map(|((n, c, k), (bn, bc, bk), act, seed)| Case {
            n,
            c,
            k,
            blocking: Blocking {
                bn: bn.min(n),
                bc: bc.min(c),
                bk: bk.min(k),
            },
            act,
            seed,
        })
}

/// Run forward, activation-backward, backward-data and backward-weights on one layer and
/// compare with f64. `rel_tol` is relative to the sum of the magnitudes of the terms.
fn check_layer<T: Element>(case: &Case, rel_tol: f64) -> Result<(), TestCaseError> {
    let Case { n, c, k, .. } = *case;
    let mut rng = Rng::new(case.seed);
    let cfg = LinearConfig::new(c, k, case.act, case.blocking);
    let mut layer = Linear::<T>::new(cfg, case.seed).unwrap();
    let ws = matmul_weights::<T>(&layer.weights());
    let b = layer.bias().to_vec();
    let x32 = rand_vec(&mut rng, n * c, 1.0);
    let dy32 = rand_vec(&mut rng, n * k, 1.0);
    let bl = case.blocking;
    let x = Blocked::<T>::from_row_major(&x32, n, c, bl.bn, bl.bc).unwrap();
    let mut y = layer.output_zeros(n).unwrap();
    layer.forward(&x, &mut y).unwrap();
    let mut dy = Blocked::<T>::from_row_major(&dy32, n, k, bl.bn, bl.bk).unwrap();
    let pre = layer.activation_backward(&y, &mut dy).unwrap();
    let mut dx = layer.input_zeros(n).unwrap();
    layer.backward_data(&pre, &mut dx).unwrap();
    layer.backward_weights(&x, &pre).unwrap();

    let xs = as_t::<T>(&x32);
    // Unit roundoff of the stored activations.
    let u = match T::DTYPE {
        DType::Bf16 => 2f64.powi(-8),
        DType::F32 => f32::EPSILON as f64,
    };
    for i in 0..n {
        for j in 0..k {
            let (mut s, mut mag) = (b[j] as f64, (b[j] as f64).abs());
            for cc in 0..c {
                let p = xs[i * c + cc] * ws[j * c + cc];
                s += p;
                mag += p.abs();
            }
            let yr = act64(case.act, s);
            let got = y.get(i, j).to_f32() as f64;
            let tol = rel_tol * mag + 4.0 * u * yr.abs() + 1e-6;
            prop_assert!(
                (got - yr).abs() <= tol,
                "y({},{}) = {} vs {} (tol {})",
                i,
                j,
                got,
                yr,
                tol
            );
        }
    }
    // dy' as the layer computed it, checked against dy * f'(y).
    let mut dyp = vec![0f64; n * k];
    for i in 0..n {
        for j in 0..k {
            let yv = y.get(i, j).to_f32() as f64;
            let d = match case.act {
                Activation::None => 1.0,
                Activation::Relu => {
                    if yv > 0.0 {
                        1.0
                    } else {
                        0.0
                    }
                }
                Activation::Sigmoid => yv * (1.0 - yv),
            };
            let want = as_t::<T>(&[dy32[i * k + j]])[0] * d;
            let got = dy.get(i, j).to_f32() as f64;
            prop_assert!(
                (got - want).abs() <= 4.0 * u * want.abs() + 1e-7,
                "dy'({},{}) {} vs {}",
                i,
                j,
                got,
                want
            );
            dyp[i * k + j] = got;
        }
    }
    for i in 0..n {
        for cc in 0..c {
            let (mut s, mut mag) = (0f64, 0f64);
            for j in 0..k {
                let p = dyp[i * k + j] * ws[j * c + cc];
                s += p;
                mag += p.abs();
            }
            let got = dx.get(i, cc).to_f32() as f64;
            prop_assert!(
                (got - s).abs() <= rel_tol * mag + 4.0 * u * s.abs() + 1e-6,
                "dx({},{}) {} vs {}",
                i,
                cc,
                got,
                s
            );
        }
    }
    let gw = layer.weight_grad();
    for j in 0..k {
        let (mut sb, mut magb) = (0f64, 0f64);
        for i in 0..n {
            sb += dyp[i * k + j];
            magb += dyp[i * k + j].abs();
        }
        let gotb = layer.bias_grad()[j] as f64;
        prop_assert!(
            (gotb - sb).abs() <= (n as f64 + 2.0) * f32::EPSILON as f64 * magb + 1e-6,
            "db({}) {} vs {}",
            j,
            gotb,
            sb
        );
        for cc in 0..c {
            let (mut s, mut mag) = (0f64, 0f64);
            for i in 0..n {
                let p = xs[i * c + cc] * dyp[i * k + j];
                s += p;
                mag += p.abs();
            }
            let got = gw[j * c + cc] as f64;
            prop_assert!(
                (got - s).abs() <= rel_tol * mag + 1e-6,
                "dW({},{}) {} vs {}",
                j,
                cc,
                got,
                s
            );
        }
    }
    Ok(())
}

fn f32_tol(case: &Case) -> f64 {
    (case.n.max(case.c).max(case.k) + 2) as f64 * f32::EPSILON as f64
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 60, ..ProptestConfig::default() })]

    #[test]
    fn linear_f32_matches_f64(case in case()) {
        check_layer::<f32>(&case, f32_tol(&case))?;
    }

    /// bf16: inputs and weights are exact bf16 values, products accumulate in f32, and each
    /// pass's result is rounded to bf16 (one unit roundoff, 2^-8, relative to the terms).
    #[test]
    fn linear_bf16_matches_f64_of_its_inputs(case in case()) {
        check_layer::<bf16>(&case, f32_tol(&case) + 2f64.powi(-7))?;
    }
}

#[test]
fn sizes_that_do_not_divide_blocks() {
    // C = 13, K = 1, N = 2047 with a 64-row batch block.
    let odd = Case {
        n: 2047,
        c: 13,
        k: 1,
        blocking: Blocking {
            bn: 64,
            bc: 13,
            bk: 1,
        },
        act: Activation::Sigmoid,
        seed: 5,
    };
    check_layer::<f32>(&odd, f32_tol(&odd)).unwrap();
    check_layer::<bf16>(&odd, f32_tol(&odd) + 2f64.powi(-7)).unwrap();
    let padded = Case {
        n: 130,
        c: 100,
        k: 70,
        blocking: Blocking {
            bn: 64,
            bc: 64,
            bk: 64,
        },
        act: Activation::Relu,
        seed: 6,
    };
    check_layer::<f32>(&padded, f32_tol(&padded)).unwrap();
    check_layer::<bf16>(&padded, f32_tol(&padded) + 2f64.powi(-7)).unwrap();
}

/// loss = sum(output * r) for a fixed random r.
fn loss_of(mlp: &mut Mlp<f32>, input: &[f32], r: &[f32]) -> f64 {
    mlp.forward(input).unwrap();
    let mut out = vec![0f32; r.len()];
    mlp.output_row_major(&mut out).unwrap();
    out.iter().zip(r).map(|(&o, &r)| o as f64 * r as f64).sum()
}

#[test]
fn finite_difference_gradient_of_three_layer_mlp() {
    let (n, sizes) = (5, vec![7, 9, 6, 3]);
    let mut cfg = MlpConfig::new(sizes.clone(), n);
    cfg.hidden_activation = Activation::Sigmoid; // smooth, so differences are meaningful
    cfg.output_activation = Activation::None;
    cfg.feature_block = Some(4); // several blocks, with padding, in every layer
    cfg.batch_block = Some(2);
    let mut mlp = Mlp::<f32>::new(cfg, 11).unwrap();
    let mut rng = Rng::new(3);
    let input = rand_vec(&mut rng, n * sizes[0], 1.0);
    let r = rand_vec(&mut rng, n * sizes[3], 1.0);
    loss_of(&mut mlp, &input, &r);
    mlp.set_output_grad(&r).unwrap();
    mlp.backward_deferred(InputGrad::Compute, |_| Ok(()))
        .unwrap();
    let mut dinput = vec![0f32; n * sizes[0]];
    mlp.input_grad().to_row_major(&mut dinput).unwrap();
    let grads: Vec<(Vec<f32>, Vec<f32>)> = mlp
        .layers()
        .iter()
        .map(|l| (l.weight_grad(), l.bias_grad().to_vec()))
        .collect();
    let h = 1e-2f32;
    let close = |num: f64, ana: f64, what: &str| {
        assert!(
            (num - ana).abs() <= 2e-3 + 2e-2 * ana.abs(),
            "{what}: numeric {num} vs analytic {ana}"
        );
    };
    #[allow(clippy::needless_range_loop)]
    for l in 0..3 {
        let (w0, b0) = (mlp.layers()[l].weights(), mlp.layers()[l].bias().to_vec());
        for idx in (0..w0.len()).step_by(3) {
            let mut w = w0.clone();
            w[idx] = w0[idx] + h;
            mlp.layers_mut()[l].set_parameters(&w, &b0).unwrap();
            let lp = loss_of(&mut mlp, &input, &r);
            w[idx] = w0[idx] - h;
            mlp.layers_mut()[l].set_parameters(&w, &b0).unwrap();
            let lm = loss_of(&mut mlp, &input, &r);
            let num = (lp - lm) / (2.0 * h as f64);
            close(num, grads[l].0[idx] as f64, &format!("layer {l} w[{idx}]"));
        }
        for idx in 0..b0.len() {
            let mut b = b0.clone();
            b[idx] = b0[idx] + h;
            mlp.layers_mut()[l].set_parameters(&w0, &b).unwrap();
            let lp = loss_of(&mut mlp, &input, &r);
            b[idx] = b0[idx] - h;
            mlp.layers_mut()[l].set_parameters(&w0, &b).unwrap();
            let lm = loss_of(&mut mlp, &input, &r);
            let num = (lp - lm) / (2.0 * h as f64);
            close(num, grads[l].1[idx] as f64, &format!("layer {l} b[{idx}]"));
        }
        mlp.layers_mut()[l].set_parameters(&w0, &b0).unwrap();
    }
    for idx in 0..input.len() {
        let mut x = input.clone();
        x[idx] += h;
        let lp = loss_of(&mut mlp, &x, &r);
        x[idx] -= 2.0 * h;
        let lm = loss_of(&mut mlp, &x, &r);
        let num = (lp - lm) / (2.0 * h as f64);
        close(num, dinput[idx] as f64, &format!("input[{idx}]"));
    }
}

#[test]
fn bf16_mlp_within_tolerance_of_f32() {
    let n = 64;
    let cfg = MlpConfig::new(vec![13, 64, 32, 1], n).with_sigmoid_output();
    let mut m32 = Mlp::<f32>::new(cfg.clone(), 9).unwrap();
    let mut m16 = Mlp::<bf16>::new(cfg, 9).unwrap();
    let mut rng = Rng::new(1);
    let input = rand_vec(&mut rng, n * 13, 1.0);
    m32.forward(&input).unwrap();
    m16.forward(&input).unwrap();
    let (mut o32, mut o16) = (vec![0f32; n], vec![0f32; n]);
    m32.output_row_major(&mut o32).unwrap();
    m16.output_row_major(&mut o16).unwrap();
    // Stated tolerance: three layers whose inputs, weights and activations are each rounded
    // to bf16 (2^-8 relative), products accumulated in f32: within 0.02 on probabilities.
    for (a, b) in o32.iter().zip(&o16) {
        assert!((a - b).abs() < 0.02, "{a} vs {b}");
    }
}

#[test]
fn split_sgd_update_is_exact_fp32_update_of_the_master() {
    for fused in [false, true] {
        let blocking = Blocking {
            bn: 16,
            bc: 16,
            bk: 16,
        };
        let cfg = LinearConfig::new(33, 17, Activation::Relu, blocking);
        let mut layer = Linear::<bf16>::new(cfg, 4).unwrap();
        let mut reference = layer.clone();
        let w0 = layer.weights();
        let b0 = layer.bias().to_vec();
        // The hi/lo halves join back to the exact f32 weight.
        layer.set_parameters(&w0, &b0).unwrap();
        assert_eq!(layer.weights(), w0);
        let mut rng = Rng::new(2);
        let x = Blocked::<bf16>::from_row_major(&rand_vec(&mut rng, 20 * 33, 1.0), 20, 33, 16, 16)
            .unwrap();
        let mut dy =
            Blocked::<bf16>::from_row_major(&rand_vec(&mut rng, 20 * 17, 1.0), 20, 17, 16, 16)
                .unwrap();
        let dy = unmasked(&layer, &mut dy);
        reference.backward_weights(&x, &dy).unwrap();
        let g = reference.weight_grad();
        let gb = reference.bias_grad().to_vec();
        let lr = 0.0123f32;
        if fused {
            layer.backward_weights_update(&x, &dy, sgd(lr)).unwrap();
        } else {
            layer.backward_weights(&x, &dy).unwrap();
            layer.update(sgd(lr)).unwrap();
        }
        let w1 = layer.weights();
        for i in 0..w0.len() {
            let want = w0[i] - lr * g[i];
            assert_eq!(w1[i].to_bits(), want.to_bits(), "fused {fused}: w[{i}]");
        }
        for i in 0..b0.len() {
            assert_eq!(layer.bias()[i].to_bits(), (b0[i] - lr * gb[i]).to_bits());
        }
    }
}

fn train_bits<T: Element>(threads: usize) -> (Vec<u32>, Vec<u32>) {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| {
        let cfg = MlpConfig::new(vec![20, 70, 33, 5], 100);
        let mut mlp = Mlp::<T>::new(cfg, 8).unwrap();
        let mut rng = Rng::new(4);
        let input = rand_vec(&mut rng, 100 * 20, 1.0);
        let d = rand_vec(&mut rng, 100 * 5, 1.0);
        for _ in 0..3 {
            mlp.forward(&input).unwrap();
            mlp.set_output_grad(&d).unwrap();
            mlp.backward(InputGrad::Compute, sgd(0.05)).unwrap();
        }
        let mut out = vec![0f32; 100 * 5];
        mlp.forward(&input).unwrap();
        mlp.output_row_major(&mut out).unwrap();
        let w: Vec<u32> = mlp
            .layers()
            .iter()
            .flat_map(|l| l.weights().into_iter().chain(l.bias().iter().copied()))
            .map(f32::to_bits)
            .collect();
        (out.into_iter().map(f32::to_bits).collect(), w)
    })
}

#[test]
fn same_bits_for_1_2_and_3_threads() {
    let f1 = train_bits::<f32>(1);
    assert_eq!(f1, train_bits::<f32>(2));
    assert_eq!(f1, train_bits::<f32>(3));
    let b1 = train_bits::<bf16>(1);
    assert_eq!(b1, train_bits::<bf16>(2));
    assert_eq!(b1, train_bits::<bf16>(3));
}

#[test]
fn fused_and_separate_updates_agree_bit_for_bit() {
    let cfg = MlpConfig::new(vec![20, 40, 3], 30);
    let mut rng = Rng::new(12);
    let input = rand_vec(&mut rng, 30 * 20, 1.0);
    let d = rand_vec(&mut rng, 30 * 3, 1.0);
    let mut a = Mlp::<f32>::new(cfg.clone(), 1).unwrap();
    let mut b = Mlp::<f32>::new(cfg, 1).unwrap();
    a.forward(&input).unwrap();
    a.set_output_grad(&d).unwrap();
    a.backward(InputGrad::Skip, sgd(0.1)).unwrap();
    b.forward(&input).unwrap();
    b.set_output_grad(&d).unwrap();
    // The deferred pass hands each layer's gradients over as soon as they exist, last layer
    // first; they are the gradients the update then applies.
    let mut seen = Vec::new();
    b.backward_deferred(InputGrad::Skip, |g| {
        seen.push((g.layer, g.bias.to_vec()));
        Ok(())
    })
    .unwrap();
    assert_eq!(seen.iter().map(|(l, _)| *l).collect::<Vec<_>>(), [1, 0]);
    for (l, bias) in &seen {
        assert_eq!(bias.as_slice(), b.layers()[*l].bias_grad());
    }
    b.update(sgd(0.1)).unwrap();
    for (la, lb) in a.layers().iter().zip(b.layers()) {
        assert_eq!(la.weights(), lb.weights());
        assert_eq!(la.bias(), lb.bias());
    }
}

#[test]
fn shape_mismatches_are_errors_and_change_nothing() {
    let blocking = Blocking {
        bn: 4,
        bc: 5,
        bk: 3,
    };
    let cfg = LinearConfig::new(5, 3, Activation::Relu, blocking);
    let mut layer = Linear::<f32>::new(cfg, 0).unwrap();
    let w0 = layer.weights();
    let x_bad_cols = Blocked::<f32>::zeros(4, 6, 4, 5).unwrap();
    let mut y = layer.output_zeros(4).unwrap();
    let err = layer.forward(&x_bad_cols, &mut y).unwrap_err();
    assert_eq!(err.to_string(), "layer input columns: expected 5, got 6");
    let x = layer.input_zeros(4).unwrap();
    let x_bad_block = Blocked::<f32>::zeros(4, 5, 2, 5).unwrap();
    assert!(matches!(
        layer.forward(&x_bad_block, &mut y),
        Err(Error::Shape { .. })
    ));
    let y_rows = layer.output_zeros(5).unwrap();
    let mut y_rows_mut = y_rows.clone();
    assert!(layer.forward(&x, &mut y_rows_mut).is_err());
    let mut dy_rows = y_rows.clone();
    let dy_rows = unmasked(&layer, &mut dy_rows);
    assert!(layer.backward_weights(&x, &dy_rows).is_err());
    assert!(
        layer
            .backward_weights_update(&x, &dy_rows, sgd(0.1))
            .is_err()
    );
    assert!(layer.update(sgd(0.1)).is_err(), "no gradient yet");
    let mut dy = layer.output_zeros(4).unwrap();
    assert!(layer.activation_backward(&y_rows, &mut dy).is_err());
    assert_eq!(layer.weights(), w0);
    assert!(matches!(
        layer.set_parameters(&[0.0; 14], &[0.0; 3]),
        Err(Error::Shape { .. })
    ));
    assert_eq!(layer.weights(), w0);

    let mut mlp = Mlp::<f32>::new(MlpConfig::new(vec![5, 3], 4), 0).unwrap();
    assert!(mlp.forward(&[0.0; 11]).is_err());
    mlp.forward(&[0.0; 10]).unwrap();
    assert!(mlp.set_output_grad(&[0.0; 5]).is_err());
    assert!(mlp.update(sgd(0.1)).is_err(), "no gradients yet");
    assert!(Mlp::<f32>::new(MlpConfig::new(vec![5, 0, 3], 4), 0).is_err());
    assert!(Mlp::<f32>::new(MlpConfig::new(vec![5, 3], 0), 0).is_err());
}

/// Backward-data reads `W^T`, which the fused update keeps in step with `W`: after several
/// fused steps it must equal the backward-data of a layer built fresh from the same weights.
fn kept_transpose_matches_fresh<T: Element>() {
    for (c, k, bc, bk) in [(20, 40, 20, 16), (64, 33, 16, 11), (7, 5, 3, 2)] {
        let blocking = Blocking { bn: 6, bc, bk };
        let cfg = LinearConfig::new(c, k, Activation::Relu, blocking);
        let mut layer = Linear::<T>::new(cfg, 3).unwrap();
        let mut rng = Rng::new(4);
        let n = 13;
        let x = Blocked::<T>::from_row_major(&rand_vec(&mut rng, n * c, 1.0), n, c, 6, bc).unwrap();
        let mut dy =
            Blocked::<T>::from_row_major(&rand_vec(&mut rng, n * k, 1.0), n, k, 6, bk).unwrap();
        let dy = unmasked(&layer, &mut dy);
        let mut dx = layer.input_zeros(n).unwrap();
        for _ in 0..3 {
            layer.backward_data(&dy, &mut dx).unwrap();
            layer.backward_weights_update(&x, &dy, sgd(0.05)).unwrap();
        }
        layer.backward_data(&dy, &mut dx).unwrap();
        let mut fresh = Linear::<T>::new(cfg, 0).unwrap();
        fresh
            .set_parameters(&layer.weights(), layer.bias())
            .unwrap();
        let mut dx_fresh = fresh.input_zeros(n).unwrap();
        fresh.backward_data(&dy, &mut dx_fresh).unwrap();
        assert_eq!(
            dx.as_slice(),
            dx_fresh.as_slice(),
            "{c}x{k} blocks {bc}x{bk}"
        );
        // The separate update marks W^T stale; backward-data rebuilds it.
        layer.backward_weights(&x, &dy).unwrap();
        layer.update(sgd(0.05)).unwrap();
        layer.backward_data(&dy, &mut dx).unwrap();
        fresh
            .set_parameters(&layer.weights(), layer.bias())
            .unwrap();
        fresh.backward_data(&dy, &mut dx_fresh).unwrap();
        assert_eq!(dx.as_slice(), dx_fresh.as_slice());
    }
}

#[test]
fn backward_data_after_fused_updates_uses_current_weights() {
    kept_transpose_matches_fresh::<f32>();
    kept_transpose_matches_fresh::<half::bf16>();
}

/// `backward_data_through` = `backward_data` then the layer below's `activation_backward`.
fn through_matches_two_passes<T: Element>() {
    let blocking = Blocking {
        bn: 5,
        bc: 7,
        bk: 4,
    };
    let cfg = LinearConfig::new(17, 9, Activation::Relu, blocking);
    let below_cfg = LinearConfig::new(
        3,
        17,
        Activation::Relu,
        Blocking {
            bc: 3,
            bk: 7,
            bn: 5,
        },
    );
    let mut rng = Rng::new(9);
    let n = 12;
    let dy0 = Blocked::<T>::from_row_major(&rand_vec(&mut rng, n * 9, 1.0), n, 9, 5, 4).unwrap();
    let y_below =
        Blocked::<T>::from_row_major(&rand_vec(&mut rng, n * 17, 1.0), n, 17, 5, 7).unwrap();
    for act in [Activation::Relu, Activation::Sigmoid, Activation::None] {
        let below = Linear::<T>::new(
            LinearConfig {
                activation: act,
                ..below_cfg
            },
            1,
        )
        .unwrap();
        let mut layer = Linear::<T>::new(cfg, 2).unwrap();
        let mut dy = dy0.clone();
        let dy = unmasked(&layer, &mut dy);
        let mut two = layer.input_zeros(n).unwrap();
        layer.backward_data(&dy, &mut two).unwrap();
        below.activation_backward(&y_below, &mut two).unwrap();
        let mut one = layer.input_zeros(n).unwrap();
        layer
            .backward_data_through(&dy, &y_below, act, &mut one)
            .unwrap();
        assert_eq!(one.as_slice(), two.as_slice(), "{act:?}");
    }
    let mut layer = Linear::<T>::new(cfg, 2).unwrap();
    let mut dy = dy0.clone();
    let dy = unmasked(&layer, &mut dy);
    let mut dx = layer.input_zeros(n).unwrap();
    let wrong = Blocked::<T>::zeros(n, 17, 5, 4).unwrap();
    let err = layer.backward_data_through(&dy, &wrong, Activation::Relu, &mut dx);
    assert!(matches!(err, Err(Error::Shape { .. })), "{err:?}");
}

#[test]
fn backward_data_through_equals_backward_data_then_activation_backward() {
    through_matches_two_passes::<f32>();
    through_matches_two_passes::<half::bf16>();
}

/// A layer of several blocks, `13 -> 7` in `bn 4, bc 5, bk 3` blocks.
fn multi_block_layer<T: Element>() -> Linear<T> {
    let blocking = Blocking {
        bn: 4,
        bc: 5,
        bk: 3,
    };
    Linear::<T>::new(LinearConfig::new(13, 7, Activation::Relu, blocking), 3).unwrap()
}

fn zero_rows_give_zero_gradients<T: Element>() {
    let mut layer = multi_block_layer::<T>();
    let (w0, b0) = (layer.weights(), layer.bias().to_vec());
    let x = layer.input_zeros(0).unwrap();
    let mut dy = layer.output_zeros(0).unwrap();
    let dy = unmasked(&layer, &mut dy);
    layer.backward_weights(&x, &dy).unwrap();
    assert_eq!(layer.weight_grad(), vec![0.0; 13 * 7], "{:?}", T::DTYPE);
    assert_eq!(layer.bias_grad(), &[0.0; 7][..]);
    layer.update(sgd(0.5)).unwrap();
    layer.backward_weights_update(&x, &dy, sgd(0.5)).unwrap();
    assert_eq!((layer.weights(), layer.bias().to_vec()), (w0, b0));
    let mut dx = layer.input_zeros(0).unwrap();
    layer.backward_data(&dy, &mut dx).unwrap();
}

/// A batch of zero rows (the MLP docs allow any number of rows) has zero gradients: the
/// layers' weights and biases stay as they are.
#[test]
fn zero_row_batches_have_zero_gradients() {
    zero_rows_give_zero_gradients::<f32>();
    zero_rows_give_zero_gradients::<bf16>();
    let cfg = MlpConfig {
        feature_block: Some(4),
        ..MlpConfig::new(vec![13, 9, 7], 8)
    };
    let mut mlp = Mlp::<f32>::new(cfg, 1).unwrap();
    let before: Vec<Vec<f32>> = mlp.layers().iter().map(|l| l.weights()).collect();
    mlp.forward(&[]).unwrap();
    assert_eq!(mlp.batch(), 0);
    mlp.set_output_grad(&[]).unwrap();
    mlp.backward_deferred(InputGrad::Compute, |_| Ok(()))
        .unwrap();
    mlp.update(sgd(0.1)).unwrap();
    mlp.backward(InputGrad::Compute, sgd(0.1)).unwrap();
    let after: Vec<Vec<f32>> = mlp.layers().iter().map(|l| l.weights()).collect();
    assert_eq!(after, before);
    // And a full batch still trains afterwards.
    mlp.forward(&[0.5; 3 * 13]).unwrap();
    mlp.set_output_grad(&[1.0; 3 * 7]).unwrap();
    mlp.backward(InputGrad::Skip, sgd(0.1)).unwrap();
}

fn non_finite_learning_rates_are_refused<T: Element>() {
    let mut layer = multi_block_layer::<T>();
    let x = Blocked::from_row_major(&[0.5; 2 * 13], 2, 13, 4, 5).unwrap();
    let mut dy = Blocked::from_row_major(&[0.25; 2 * 7], 2, 7, 4, 3).unwrap();
    let dy = unmasked(&layer, &mut dy);
    layer.backward_weights(&x, &dy).unwrap();
    let (w0, b0) = (layer.weights(), layer.bias().to_vec());
    for lr in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let err = layer.update(sgd(lr)).unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{err}");
        assert!(err.to_string().contains("learning rate"), "{err}");
        let err = layer.backward_weights_update(&x, &dy, sgd(lr)).unwrap_err();
        assert!(err.to_string().contains("learning rate"), "{err}");
        assert_eq!(
            (layer.weights(), layer.bias().to_vec()),
            (w0.clone(), b0.clone())
        );
    }
    // The gradient of the refused calls is still there to apply.
    layer.update(sgd(0.1)).unwrap();
    assert_ne!(layer.weights(), w0);
}

/// A NaN or infinite learning rate is an error that changes nothing (as the embedding update
/// refuses it), not NaN written into the weights.
#[test]
fn non_finite_learning_rates_are_errors_that_change_nothing() {
    non_finite_learning_rates_are_refused::<f32>();
    non_finite_learning_rates_are_refused::<bf16>();
    let mut mlp = Mlp::<f32>::new(MlpConfig::new(vec![3, 2], 4), 0).unwrap();
    mlp.forward(&[1.0; 12]).unwrap();
    let before = mlp.layers()[0].weights();
    mlp.set_output_grad(&[0.5; 8]).unwrap();
    assert!(mlp.backward(InputGrad::Compute, sgd(f32::NAN)).is_err());
    mlp.backward_deferred(InputGrad::Compute, |_| Ok(()))
        .unwrap();
    assert!(mlp.update(sgd(f32::NAN)).is_err());
    assert_eq!(mlp.layers()[0].weights(), before);
}
