//! BRGEMM throughput for the blocks the MLP uses, as GFLOP/s and as a fraction of the fp32
//! FMA / `vdpbf16ps` peak measured in the same run; and a 2048x1024x1024 fp32 GEMM assembled
//! from BRGEMM calls beside the `gemm` crate and `matrixmultiply` (one thread each).
//!
//! Run: `cargo bench --bench brgemm` (a filter after `--` selects groups, e.g.
//! `cargo bench --bench brgemm -- gemm_2048`). Criterion prints `elem/s` where an element is
//! one FLOP; the summary at the end prints GFLOP/s and the fraction of peak.

mod common;

use std::hint::black_box;
use std::time::Duration;

use common::{Line, print_summary};
use criterion::{BenchmarkId, Criterion, Throughput};
use dlrm_microkernels::peak::{self, Peak};
use dlrm_microkernels::{
    Batch, Brgemm, BrgemmDesc, Isa, RegisterTile, baselines, bf16, tuning::Overrides, vnni,
};

const PEAK_ITERS: u64 = 400_000;

fn bench_peaks(c: &mut Criterion, lines: &mut Vec<Line>) {
    let mut g = c.benchmark_group("peak");
    for p in Peak::ALL {
        if !p.is_available() {
            eprintln!("skip: peak {p:?} needs {}, not available", p.isa());
            continue;
        }
        let flops = PEAK_ITERS * p.flops_per_iteration();
        g.throughput(Throughput::Elements(flops));
        g.bench_function(p.name(), |b| b.iter(|| peak::run(p, black_box(PEAK_ITERS))));
        lines.push(Line {
            group: "peak".into(),
            id: p.name().into(),
            work: flops as f64,
            unit: "GFLOP/s",
            versus: None,
        });
    }
    g.finish();
}

fn versus_peak(p: Peak) -> Option<(String, String, String, f64)> {
    p.is_available().then(|| {
        (
            format!("{} peak", p.name()),
            "peak".to_string(),
            p.name().to_string(),
            (PEAK_ITERS * p.flops_per_iteration()) as f64,
        )
    })
}

fn bench_blocks(c: &mut Criterion, lines: &mut Vec<Line>) {
    for bf in [false, true] {
        let group = if bf { "brgemm_bf16" } else { "brgemm_f32" };
        let mut g = c.benchmark_group(group);
        g.measurement_time(Duration::from_secs(2));
        g.warm_up_time(Duration::from_millis(500));
        for isa in Isa::ALL {
            if !isa.is_available() {
                eprintln!("skip: {group} on {isa}: not available on this CPU");
                continue;
            }
            // f32 has no AVX512-BF16 specific path: it is the Avx512 kernel.
            if !bf && isa == Isa::Avx512Bf16 {
                continue;
            }
            for size in [32usize, 64] {
                for count in [1usize, 8, 16, 32] {
                    let desc = if bf {
                        BrgemmDesc::bf16(size, size, size)
                    } else {
                        BrgemmDesc::f32(size, size, size)
                    };
                    let kernel = Brgemm::with_isa(desc, isa).unwrap();
                    let flops = desc.flops(count);
                    let param = format!("{size}x{size}x{size}_x{count}");
                    g.throughput(Throughput::Elements(flops));
                    let id = BenchmarkId::new(isa.name(), &param);
                    if bf {
                        let a = vec![bf16::from_f32(0.5); size * size * count];
                        let b = vec![bf16::from_f32(0.25); vnni::packed_len(size, size) * count];
                        let mut out = vec![0f32; size * size];
                        g.bench_function(id, |bch| {
                            bch.iter(|| kernel.run(Batch::strided(&a, &b, count), &mut out))
                        });
                    } else {
                        let a = vec![0.5f32; size * size * count];
                        let b = vec![0.25f32; size * size * count];
                        let mut out = vec![0f32; size * size];
                        g.bench_function(id, |bch| {
                            bch.iter(|| kernel.run(Batch::strided(&a, &b, count), &mut out))
                        });
                    }
                    let versus = match (bf, isa) {
                        (_, Isa::Avx2) => versus_peak(Peak::Fp32Fma256),
                        (true, Isa::Amx) => versus_peak(Peak::AmxTiles),
                        (true, Isa::Avx512Bf16) => versus_peak(Peak::Bf16Dot),
                        _ => versus_peak(Peak::Fp32Fma),
                    };
                    lines.push(Line {
                        group: group.into(),
                        id: format!("{}/{param}", isa.name()),
                        work: flops as f64,
                        unit: "GFLOP/s",
                        versus,
                    });
                }
            }
        }
        g.finish();
    }
}

/// 64x64x64 x16 f32 on the best SIMD backend and on `avx2` with each register tile that fits
/// (a backend refuses the others), to check the CPU table's choice
/// ([`dlrm_microkernels::tuning`]) against its alternatives.
fn bench_tiles(c: &mut Criterion, lines: &mut Vec<Line>) {
    let mut isas = vec![Isa::best()];
    if Isa::Avx2.is_available() && !isas.contains(&Isa::Avx2) {
        isas.push(Isa::Avx2);
    }
    isas.retain(|&i| i != Isa::Portable);
    let group = "brgemm_f32_tiles";
    let mut g = c.benchmark_group(group);
    g.measurement_time(Duration::from_secs(2));
    g.warm_up_time(Duration::from_millis(500));
    let (size, count) = (64usize, 16usize);
    let desc = BrgemmDesc::f32(size, size, size);
    let a = vec![0.5f32; size * size * count];
    let b = vec![0.25f32; size * size * count];
    let mut out = vec![0f32; size * size];
    g.throughput(Throughput::Elements(desc.flops(count)));
    let tiles = [
        (6, 4),
        (7, 3),
        (8, 3),
        (9, 3),
        (12, 2),
        (13, 2),
        (14, 2),
        (14, 1),
        (4, 2),
        (6, 2),
        (4, 3),
        (12, 1),
    ];
    for isa in isas {
        for ((rows, cols), outer) in tiles.into_iter().flat_map(|t| [(t, false), (t, true)]) {
            let tile = RegisterTile { rows, cols };
            let o = Overrides {
                tile: Some(tile),
                pair_outer: Some(outer),
                ..Overrides::default()
            };
            let Ok(kernel) = Brgemm::with_overrides(desc, isa, o) else {
                continue;
            };
            let order = if outer { "pairs_outer" } else { "tiles_outer" };
            let id = format!("{isa}/{rows}x{cols}_{order}");
            g.bench_function(&id, |bch| {
                bch.iter(|| kernel.run(Batch::strided(&a, &b, count), &mut out))
            });
            lines.push(Line {
                group: group.into(),
                id,
                work: desc.flops(count) as f64,
                unit: "GFLOP/s",
                versus: versus_peak(if isa == Isa::Avx2 {
                    Peak::Fp32Fma256
                } else {
                    Peak::Fp32Fma
                }),
            });
        }
    }
    g.finish();
}

/// C[M x N] = A[M x K] B[K x N] from 64x64x64 BRGEMM calls, one thread.
fn bench_large_gemm(c: &mut Criterion, lines: &mut Vec<Line>) {
    const M: usize = 2048;
    const N: usize = 1024;
    const K: usize = 1024;
    const BS: usize = 64;
    let group = "gemm_2048x1024x1024";
    let flops = 2.0 * (M * N * K) as f64;
    let a: Vec<f32> = (0..M * K).map(|i| ((i % 7) as f32 - 3.0) * 0.1).collect();
    let b: Vec<f32> = (0..K * N).map(|i| ((i % 5) as f32 - 2.0) * 0.1).collect();
    let mut out = vec![0f32; M * N];
    let (mb, nb, kb) = (M / BS, N / BS, K / BS);

    // Pre-blocked operands, as the MLP keeps them: A [Mb][Kb][bs][bs], B [Nb][Kb][bs][bs].
    let mut a_blk = vec![0f32; M * K];
    for (i, x) in a.iter().enumerate() {
        let (r, k) = (i / K, i % K);
        a_blk[((r / BS * kb + k / BS) * BS + r % BS) * BS + k % BS] = *x;
    }
    let mut b_blk = vec![0f32; K * N];
    for (i, x) in b.iter().enumerate() {
        let (k, j) = (i / N, i % N);
        b_blk[((j / BS * kb + k / BS) * BS + k % BS) * BS + j % BS] = *x;
    }
    let mut blocked = BrgemmDesc::f32(BS, BS, BS);
    blocked.ldc = N;
    let blocked = Brgemm::new(blocked).unwrap();
    // Straight from row-major: A_i moves right by BS columns, B_i down by BS rows.
    let mut rm = BrgemmDesc::f32(BS, BS, BS);
    (rm.lda, rm.ldb, rm.ldc) = (K, N, N);
    rm.batch = dlrm_microkernels::BatchKind::Strided {
        stride_a: BS,
        stride_b: BS * N,
    };
    let rm = Brgemm::new(rm).unwrap();

    let mut g = c.benchmark_group(group);
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(4));
    g.throughput(Throughput::Elements(flops as u64));
    // Row block of A outer (it stays in L2), as the MLP's forward walks its output blocks.
    g.bench_function("brgemm_blocked", |bch| {
        bch.iter(|| {
            for m in 0..mb {
                let a_panel = &a_blk[m * kb * BS * BS..(m + 1) * kb * BS * BS];
                for n in 0..nb {
                    let b_panel = &b_blk[n * kb * BS * BS..(n + 1) * kb * BS * BS];
                    let c_blk = &mut out[m * BS * N + n * BS..];
                    blocked
                        .run(Batch::strided(a_panel, b_panel, kb), c_blk)
                        .unwrap();
                }
            }
        })
    });
    g.bench_function("brgemm_rowmajor", |bch| {
        bch.iter(|| {
            for n in 0..nb {
                for m in 0..mb {
                    let c_blk = &mut out[m * BS * N + n * BS..];
                    rm.run(Batch::strided(&a[m * BS * K..], &b[n * BS..], kb), c_blk)
                        .unwrap();
                }
            }
        })
    });
    g.bench_function("gemm_crate", |bch| {
        bch.iter(|| baselines::gemm_crate(M, N, K, &a, &b, &mut out).unwrap())
    });
    g.bench_function("matrixmultiply", |bch| {
        bch.iter(|| baselines::matrixmultiply(M, N, K, &a, &b, &mut out).unwrap())
    });
    g.finish();
    let vs_gemm = Some((
        "gemm crate".to_string(),
        group.to_string(),
        "gemm_crate".to_string(),
        flops,
    ));
    for id in [
        "brgemm_blocked",
        "brgemm_rowmajor",
        "gemm_crate",
        "matrixmultiply",
    ] {
        lines.push(Line {
            group: group.into(),
            id: id.into(),
            work: flops,
            unit: "GFLOP/s",
            versus: if id == "gemm_crate" {
                versus_peak(Peak::Fp32Fma)
            } else {
                vs_gemm.clone()
            },
        });
    }
}

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    let mut lines = Vec::new();
    bench_peaks(&mut c, &mut lines);
    bench_blocks(&mut c, &mut lines);
    bench_tiles(&mut c, &mut lines);
    bench_large_gemm(&mut c, &mut lines);
    c.final_summary();
    print_summary("brgemm", &lines);
}
