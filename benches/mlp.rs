//! `Linear` 1024 -> 1024 with batch 2048 (the DLRM small config's MLP layers): forward,
//! backward-data, backward-weights and the whole step (forward + backward + fused SGD), on 1
//! and 2 threads, f32 and bf16, as GFLOP/s and as a fraction of the FMA / `vdpbf16ps` peak
//! measured on the same number of threads in the same run.
//!
//! Run: `cargo bench --bench mlp` (filter groups after `--`, e.g. `-- mlp_f32`; the layer
//! runs on the active backend, `DLRM_ISA=avx2` selects another, and is compared with the
//! peak of the instruction that backend multiplies with).
//! PyTorch beside it: `python3 benches/compare/linear.py` (see benches/compare/README.md).

mod common;

use std::hint::black_box;
use std::time::Duration;

use common::{Line, print_summary};
use criterion::{Criterion, Throughput};
use dlrm_kernels::blocked::Blocked;
use dlrm_kernels::kernels::Element;
use dlrm_kernels::kernels::peak::{self, Peak};
use dlrm_kernels::kernels::tuning::Tuning;
use dlrm_kernels::linear::{Activation, Blocking, Linear, LinearConfig};
use dlrm_kernels::optim::DenseUpdate;
use dlrm_kernels::rng::Rng;
use dlrm_kernels::{DType, Isa, bf16};
use rayon::ThreadPool;

const N: usize = 2048;
const C: usize = 1024;
const K: usize = 1024;
const PEAK_ITERS: u64 = 400_000;

fn pool(threads: usize) -> ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("thread pool")
}

fn peak_name(p: Peak, threads: usize) -> String {
    format!("{}_{threads}t", p.name())
}

fn bench_peaks(c: &mut Criterion, lines: &mut Vec<Line>) {
    let mut g = c.benchmark_group("peak");
    for threads in [1, 2] {
        let pool = pool(threads);
        for p in Peak::ALL {
            if !p.is_available() {
                eprintln!("skip: peak {p:?} not available on this CPU");
                continue;
            }
            let flops = PEAK_ITERS * p.flops_per_iteration() * threads as u64;
            g.throughput(Throughput::Elements(flops));
            g.bench_function(peak_name(p, threads), |b| {
                b.iter(|| {
                    pool.broadcast(|_| peak::run(p, black_box(PEAK_ITERS)).unwrap());
                })
            });
            lines.push(Line {
                group: "peak".into(),
                id: peak_name(p, threads),
                work: flops as f64,
                unit: "GFLOP/s",
                versus: None,
            });
        }
    }
    g.finish();
}

fn bench_linear<T: Element>(c: &mut Criterion, lines: &mut Vec<Line>) {
    let bf = T::DTYPE == DType::Bf16;
    let group = if bf { "mlp_bf16" } else { "mlp_f32" };
    let tuning = Tuning::for_backend(Isa::active().unwrap()).unwrap();
    let peak = tuning.peak(T::DTYPE);
    let blocking = Blocking::auto(N, C, K).expect("block sizes");
    let cfg = LinearConfig::new(C, K, Activation::Relu, blocking);
    let pass_flops = (2 * N * C * K) as f64;
    let mut rng = Rng::new(1);
    let x32: Vec<f32> = (0..N * C).map(|_| rng.uniform_in(-1.0, 1.0)).collect();
    let dy32: Vec<f32> = (0..N * K).map(|_| rng.uniform_in(-1e-3, 1e-3)).collect();
    let x = Blocked::<T>::from_row_major(&x32, N, C, blocking.bn, blocking.bc).unwrap();
    let dy0 = Blocked::<T>::from_row_major(&dy32, N, K, blocking.bn, blocking.bk).unwrap();
    let mut g = c.benchmark_group(group);
    g.sample_size(10);
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(4));
    for threads in [1usize, 2] {
        let pool = pool(threads);
        let mut layer = Linear::<T>::new(cfg, 3).unwrap();
        let mut y = layer.output_zeros(N).unwrap();
        let mut dx = layer.input_zeros(N).unwrap();
        let mut dy = dy0.clone();
        // The single backward passes take the gradient before the activation, made once.
        layer.forward(&x, &mut y).unwrap();
        let mut pre_buf = dy0.clone();
        let pre = layer.activation_backward(&y, &mut pre_buf).unwrap();
        let passes: [(&str, f64); 4] = [
            ("forward", pass_flops),
            ("backward_data", pass_flops),
            ("backward_weights", pass_flops),
            ("step", 3.0 * pass_flops),
        ];
        for (name, flops) in passes {
            let id = format!("{threads}t/{name}");
            g.throughput(Throughput::Elements(flops as u64));
            g.bench_function(&id, |b| {
                b.iter(|| {
                    pool.install(|| match name {
                        "forward" => layer.forward(&x, &mut y).unwrap(),
                        "backward_data" => layer.backward_data(&pre, &mut dx).unwrap(),
                        "backward_weights" => layer.backward_weights(&x, &pre).unwrap(),
                        _ => {
                            // The whole training step of one layer.
                            layer.forward(&x, &mut y).unwrap();
                            dy.as_mut_slice().copy_from_slice(dy0.as_slice());
                            let d = layer.activation_backward(&y, &mut dy).unwrap();
                            layer.backward_data(&d, &mut dx).unwrap();
                            let sgd = DenseUpdate::Sgd { lr: 1e-6 };
                            layer.backward_weights_update(&x, &d, sgd).unwrap();
                        }
                    })
                })
            });
            lines.push(Line {
                group: group.into(),
                id,
                work: flops,
                unit: "GFLOP/s",
                versus: Some((
                    peak_name(peak, threads) + " peak",
                    "peak".into(),
                    peak_name(peak, threads),
                    (PEAK_ITERS * peak.flops_per_iteration() * threads as u64) as f64,
                )),
            });
        }
    }
    g.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let mut lines = Vec::new();
    eprintln!("{}", dlrm_kernels::kernels::diagnostics::Diagnostics::get());
    bench_peaks(&mut c, &mut lines);
    bench_linear::<f32>(&mut c, &mut lines);
    bench_linear::<bf16>(&mut c, &mut lines);
    c.final_summary();
    print_summary("mlp: Linear 1024 -> 1024, batch 2048", &lines);
}
