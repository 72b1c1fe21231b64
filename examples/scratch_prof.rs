use dlrm_kernels::bf16;
use dlrm_kernels::blocked::Blocked;
use dlrm_kernels::kernels::Element;
use dlrm_kernels::linear::{Activation, Blocking, Linear, LinearConfig};
use std::time::Instant;
fn layer<T: Element>(n: usize, c: usize, k: usize, act: Activation) {
    let b = Blocking::auto(n, c, k);
    let cfg = LinearConfig::new(c, k, act, b);
    let mut layer = Linear::<T>::new(cfg, 1).unwrap();
    let x32: Vec<f32> = (0..n * c)
        .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
        .collect();
    let x = Blocked::<T>::from_row_major(&x32, n, c, b.bn, b.bc).unwrap();
    let mut y = layer.output_zeros(n).unwrap();
    let dy32: Vec<f32> = (0..n * k)
        .map(|i| ((i * 104729) % 1000) as f32 / 1000.0 - 0.5)
        .collect();
    let dy0 = Blocked::<T>::from_row_major(&dy32, n, k, b.bn, b.bk).unwrap();
    let dy = dy0.clone();
    let mut dx = layer.input_zeros(n).unwrap();
    let t = |f: &mut dyn FnMut()| {
        f();
        let reps = 10;
        let s = Instant::now();
        for _ in 0..reps {
            f();
        }
        s.elapsed().as_secs_f64() * 1e3 / reps as f64
    };
    let f = t(&mut || layer.forward(&x, &mut y).unwrap());
    let d = t(&mut || layer.backward_data(&dy, &mut dx).unwrap());
    let w = t(&mut || layer.backward_weights_update(&x, &dy, 1e-9).unwrap());
    let flops = cfg.flops(n) as f64;
    println!(
        "{c:>5} -> {k:>5}: fwd {f:6.2} bwd_d {d:6.2} bwd_w {w:6.2} ms = {:6.1} GFLOP/s",
        flops / (f + d + w) / 1e6
    );
}
fn main() {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    pool.install(|| {
        for (name, bf) in [("f32", false), ("bf16", true)] {
            println!("{name}");
            for (c, k, a) in [
                (512, 512, Activation::Relu),
                (512, 64, Activation::Relu),
                (100, 1024, Activation::Relu),
                (1024, 1024, Activation::Relu),
                (1024, 1, Activation::None),
            ] {
                if bf {
                    layer::<bf16>(2048, c, k, a)
                } else {
                    layer::<f32>(2048, c, k, a)
                }
            }
        }
    });
}
