//! Until the DLRM trainer lands, this prints the detected ISA and a BRGEMM throughput figure.
//!
//! `cargo run --release --example dlrm`

use std::time::Instant;

use dlrm_kernels::kernels::{Batch, Brgemm, BrgemmDesc, Isa, bf16, vnni};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let active = Isa::active()?;
    println!("best ISA on this CPU: {}; active: {active}", Isa::best());
    let (size, count) = (64, 16);
    let a = vec![0.5f32; size * size * count];
    let b = vec![0.25f32; size * size * count];
    let mut c = vec![0f32; size * size];
    let f32_kernel = Brgemm::new(BrgemmDesc::f32(size, size, size))?;
    let gflops = measure(f32_kernel.desc().flops(count), || {
        f32_kernel.run(Batch::strided(&a, &b, count), &mut c)
    })?;
    println!("f32  BRGEMM {size}x{size}x{size} x{count}: {gflops:.1} GFLOP/s (one thread)");

    let a16 = vec![bf16::from_f32(0.5); size * size * count];
    let b16 = vec![bf16::from_f32(0.25); vnni::packed_len(size, size) * count];
    let bf16_kernel = Brgemm::new(BrgemmDesc::bf16(size, size, size))?;
    let gflops = measure(bf16_kernel.desc().flops(count), || {
        bf16_kernel.run(Batch::strided(&a16, &b16, count), &mut c)
    })?;
    println!("bf16 BRGEMM {size}x{size}x{size} x{count}: {gflops:.1} GFLOP/s (one thread)");
    Ok(())
}

/// Best-of-5 GFLOP/s of `f`, each sample about 0.1 s.
fn measure<E>(flops: u64, mut f: impl FnMut() -> Result<(), E>) -> Result<f64, E> {
    let start = Instant::now();
    f()?;
    let reps = (0.1 / start.elapsed().as_secs_f64().max(1e-7)).ceil() as usize;
    let mut best = 0f64;
    for _ in 0..5 {
        let t = Instant::now();
        for _ in 0..reps {
            f()?;
        }
        best = best.max((flops as f64 * reps as f64) / t.elapsed().as_secs_f64() / 1e9);
    }
    Ok(best)
}
