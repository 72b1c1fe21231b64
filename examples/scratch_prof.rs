use dlrm_kernels::bf16;
use dlrm_kernels::blocked::Blocked;
use dlrm_kernels::kernels::Element;
use dlrm_kernels::linear::{Activation, Blocking, Linear, LinearConfig};
use std::time::Instant;
fn go<T: Element>(threads: usize) {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    let (n, c, k) = (2048, 1024, 1024);
    let b = Blocking::auto(n, c, k);
    let cfg = LinearConfig::new(c, k, Activation::Relu, b);
    let mut layer = Linear::<T>::new(cfg, 1).unwrap();
    let x32: Vec<f32> = (0..n * c)
        .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
        .collect();
    let x = Blocked::<T>::from_row_major(&x32, n, c, b.bn, b.bc).unwrap();
    let mut y = layer.output_zeros(n).unwrap();
    let dy0 = Blocked::<T>::from_row_major(&x32[..n * k], n, k, b.bn, b.bk).unwrap();
    let mut dy = dy0.clone();
    let mut dx = layer.input_zeros(n).unwrap();
    let t = |name: &str, f: &mut dyn FnMut()| {
        f();
        let reps = 10;
        let s = Instant::now();
        for _ in 0..reps {
            f();
        }
        println!(
            "{name:>24}: {:.2} ms",
            s.elapsed().as_secs_f64() * 1e3 / reps as f64
        );
    };
    pool.install(|| {
        t("forward", &mut || layer.forward(&x, &mut y).unwrap());
        t("copy dy", &mut || {
            dy.as_mut_slice().copy_from_slice(dy0.as_slice())
        });
        t("act_backward", &mut || {
            layer.activation_backward(&y, &mut dy).unwrap()
        });
        t("backward_data", &mut || {
            layer.backward_data(&dy, &mut dx).unwrap()
        });
        t("backward_weights", &mut || {
            layer.backward_weights(&x, &dy).unwrap()
        });
        t("backward_weights_update", &mut || {
            layer.backward_weights_update(&x, &dy, 1e-9).unwrap()
        });
        t("update", &mut || layer.update(1e-9).unwrap());
    });
}
fn main() {
    for th in [1, 2] {
        println!("f32 {th}t");
        go::<f32>(th);
        println!("bf16 {th}t");
        go::<bf16>(th);
    }
}
