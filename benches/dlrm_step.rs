//! One training step of the DLRM `small` configuration (8 tables x 1M rows, dim 64, bags of
//! 1 to 100 lookups, bottom 512-512-64, top 1024-1024-1024-1, batch 2048), fp32 and bf16, on
//! 2 threads: ms per step, the time split into embedding, MLP, interaction and the rest, and
//! the floor for this machine measured in the same run:
//! `MLP FLOP / FMA (or vdpbf16ps) peak + embedding rows moved / random-row gather rate`,
//! where rows moved = lookups (forward) + 2 x distinct rows (backward read and write).
//!
//! Run: `cargo bench --bench dlrm_step` (about a minute; 4 GiB of tables).

mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::Criterion;
use dlrm_kernels::DType;
use dlrm_kernels::data::MiniBatch;
use dlrm_kernels::data::random::{RandomData, RandomDataConfig};
use dlrm_kernels::embedding::{
    Bags, EmbeddingBagConfig, EmbeddingBags, EmbeddingTable, TableConfig,
};
use dlrm_kernels::kernels::peak::{self, Peak};
use dlrm_kernels::kernels::tuning::Tuning;
use dlrm_kernels::model::{Dlrm, DlrmConfig, Precision};
use rayon::ThreadPool;

const THREADS: usize = 2;
const BATCHES: usize = 6;

/// The workers, not pinned (as the trainer runs by default; pinning them with
/// `threads::pool(THREADS, true)` made no difference beyond the noise here).
fn pool() -> ThreadPool {
    dlrm_kernels::threads::pool(THREADS, false)
        .expect("pool")
        .pool
}

/// FLOP/s of `p` on all threads of `pool`, best of 5.
fn peak_rate(pool: &ThreadPool, p: Peak) -> f64 {
    let iters = 400_000u64;
    (0..5)
        .map(|_| {
            let t = Instant::now();
            pool.broadcast(|_| peak::run(p, black_box(iters)).unwrap());
            (iters * p.flops_per_iteration() * THREADS as u64) as f64 / t.elapsed().as_secs_f64()
        })
        .fold(0.0, f64::max)
}

/// Random rows gathered per second from a 1M x 64 table of `precision` (the forward of a
/// 1-table embedding bag with 50 random lookups per bag), best of 5.
fn gather_rate(pool: &ThreadPool, precision: Precision) -> f64 {
    let tc = match precision {
        Precision::F32 => TableConfig::f32(1_000_000, 64),
        Precision::Bf16 => TableConfig::bf16_split(1_000_000, 64),
    };
    let emb = EmbeddingBags::new(
        vec![EmbeddingTable::new(tc, 1).unwrap()],
        EmbeddingBagConfig::default(),
    )
    .unwrap();
    let data = RandomData::new(RandomDataConfig {
        dense_features: 1,
        table_rows: vec![1_000_000],
        batch_size: 2048,
        indices_per_lookup: 50,
        indices_per_lookup_fixed: true,
        ..RandomDataConfig::default()
    })
    .unwrap();
    let batches: Vec<MiniBatch> = (0..8).map(|i| data.batch(i)).collect();
    let mut out = vec![0f32; 2048 * 64];
    let mut best = 0f64;
    for rep in 0..5 {
        let t = Instant::now();
        let mut rows = 0;
        for b in &batches {
            pool.install(|| {
                let bags = emb.check(&[Bags::new(&b.indices[0], &b.offsets[0])])?;
                emb.forward(&bags, &mut out)
            })
            .unwrap();
            rows += b.indices[0].len();
        }
        if rep > 0 {
            best = best.max(rows as f64 / t.elapsed().as_secs_f64());
        }
    }
    best
}

fn distinct_rows(b: &MiniBatch) -> usize {
    b.indices
        .iter()
        .map(|idx| {
            let mut v = idx.clone();
            v.sort_unstable();
            v.dedup();
            v.len()
        })
        .sum()
}

fn main() {
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(10))
        .configure_from_args();
    let pool = pool();
    let cfg0 = DlrmConfig::small();
    let data = RandomData::new(RandomDataConfig {
        dense_features: cfg0.dense_features(),
        table_rows: cfg0.table_rows.clone(),
        batch_size: cfg0.batch_size,
        indices_per_lookup: 100,
        indices_per_lookup_fixed: false,
        round_targets: true,
        seed: 7,
    })
    .unwrap();
    let batches: Vec<MiniBatch> = (0..BATCHES as u64).map(|i| data.batch(i)).collect();
    let lookups = batches
        .iter()
        .map(|b| b.indices.iter().map(Vec::len).sum::<usize>())
        .sum::<usize>() as f64
        / BATCHES as f64;
    let distinct = batches.iter().map(distinct_rows).sum::<usize>() as f64 / BATCHES as f64;
    let mut report = Vec::new();
    for precision in [Precision::F32, Precision::Bf16] {
        let cfg = DlrmConfig {
            precision,
            lr: dlrm_kernels::optim::LrPolicy::constant(0.01),
            ..cfg0.clone()
        };
        let mut model = pool.install(|| Dlrm::new(cfg.clone(), 1)).unwrap();
        let mut g = c.benchmark_group("dlrm_step_small");
        let id = format!("{}_{THREADS}t", precision.name());
        let mut i = 0;
        g.bench_function(&id, |b| {
            b.iter(|| {
                i += 1;
                pool.install(|| model.train_step(&batches[i % BATCHES]))
                    .unwrap()
            })
        });
        g.finish();
        // The split, over a few more steps.
        model.reset_timings();
        let t = Instant::now();
        for b in batches.iter().cycle().take(2 * BATCHES) {
            pool.install(|| model.train_step(b)).unwrap();
        }
        let wall = t.elapsed().as_secs_f64() * 1e3 / (2 * BATCHES) as f64;
        let tm = model.timings();
        let per = |d: Duration| d.as_secs_f64() * 1e3 / tm.steps as f64;
        let tuning = Tuning::for_backend(dlrm_kernels::Isa::active().unwrap()).unwrap();
        let peak = tuning.peak(match precision {
            Precision::F32 => DType::F32,
            Precision::Bf16 => DType::Bf16,
        });
        let peak_flops = peak_rate(&pool, peak);
        let gather = gather_rate(&pool, precision);
        let floor =
            cfg.mlp_flops() as f64 / peak_flops * 1e3 + (lookups + 2.0 * distinct) / gather * 1e3;
        let median = common::median_ns("dlrm_step_small", &id).map(|ns| ns / 1e6);
        report.push(format!(
            "{id}: median {} ms/step (criterion); split over {} steps: embedding {:.1}, MLP {:.1}, interaction {:.1}, other {:.1} ms (wall {:.1} ms)\n    floor {:.1} ms = {:.2} GFLOP at {:.0} GFLOP/s ({peak:?} peak, {THREADS} threads) + {:.2} M rows at {:.1} M rows/s gather; {:.2}x the floor",
            median.map_or("?".into(), |m| format!("{m:.1}")),
            tm.steps,
            per(tm.embedding),
            per(tm.mlp),
            per(tm.interaction),
            per(tm.other),
            wall,
            floor,
            cfg.mlp_flops() as f64 / 1e9,
            peak_flops / 1e9,
            (lookups + 2.0 * distinct) / 1e6,
            gather / 1e6,
            median.unwrap_or(wall) / floor,
        ));
    }
    c.final_summary();
    println!(
        "\n{}",
        dlrm_kernels::kernels::diagnostics::Diagnostics::get()
    );
    println!(
        "\n== dlrm_step: small config, batch 2048, {lookups:.0} lookups and {distinct:.0} distinct rows per step =="
    );
    for line in report {
        println!("{line}");
    }
}
