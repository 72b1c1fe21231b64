//! Embedding bags: forward (pooling) and the fused backward + SGD update, in M lookups/s and
//! GB/s of table rows, with 1 and 2 threads (local rayon pools).
//!
//! Tables 1M x 64 and 8M x 64 (fp32 and bf16 Split-SGD) and 1M x 128 fp32; batch 2048, 100
//! uniformly random lookups per bag (i64 indices, sum pooling); 8 pre-generated index batches
//! are rotated so rows are not cache-resident. The `step` group runs forward + backward +
//! update together, the figure to set beside PyTorch's forward + sparse backward + SGD
//! (`benches/compare/embedding_bag.py`).
//!
//! Run: `cargo bench --bench embedding` (about 3 minutes; the 8M tables take 2 GiB each, one
//! at a time). A filter after `--` selects benchmarks, e.g.
//! `cargo bench --bench embedding -- 'forward/f32_1Mx64'` (a plain substring: tables no
//! benchmark selects are not even built). `EMB_PREFETCH=<lookups>` overrides
//! the prefetch distance (default: about 8 KiB of rows ahead; 0 turns software prefetch off).
//!
//! GB/s counts table bytes only: the forward reads `dim * 4` (fp32) or `dim * 2` (bf16) bytes
//! per lookup; the update reads and writes each row once, `2 * dim * 4` bytes per lookup
//! (fp32, and bf16 Split-SGD, whose halves together are 4 bytes per weight).

mod common;

use std::hint::black_box;
use std::time::Duration;

use common::{Line, print_summary};
use criterion::{BenchmarkId, Criterion, Throughput};
use dlrm_kernels::embedding::{
    Bags, EmbeddingBagConfig, EmbeddingBags, EmbeddingTable, TableConfig, TableType,
};
use dlrm_kernels::optim::TableUpdate;
use dlrm_kernels::rng::Rng;

const BATCH: usize = 2048;
const BAG: usize = 100;
const LOOKUPS: usize = BATCH * BAG;
const ROTATE: usize = 8;
const THREADS: [usize; 2] = [1, 2];

struct Case {
    name: &'static str,
    config: TableConfig,
    /// Also run the forward + backward + update step.
    step: bool,
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "f32_1Mx64",
            config: TableConfig::f32(1 << 20, 64),
            step: true,
        },
        Case {
            name: "bf16_1Mx64",
            config: TableConfig::bf16_split(1 << 20, 64),
            step: true,
        },
        Case {
            name: "f32_1Mx128",
            config: TableConfig::f32(1 << 20, 128),
            step: false,
        },
        Case {
            name: "f32_8Mx64",
            config: TableConfig::f32(8 << 20, 64),
            step: false,
        },
        Case {
            name: "bf16_8Mx64",
            config: TableConfig::bf16_split(8 << 20, 64),
            step: false,
        },
    ]
}

/// `ROTATE` batches of `BATCH` bags of `BAG` uniformly random rows (i64, `B` offsets).
fn index_batches(rows: usize, seed: u64) -> Vec<(Vec<i64>, Vec<i64>)> {
    let mut rng = Rng::new(seed);
    (0..ROTATE)
        .map(|_| {
            let indices = (0..LOOKUPS)
                .map(|_| rng.below(rows as u64) as i64)
                .collect();
            let offsets = (0..BATCH).map(|b| (b * BAG) as i64).collect();
            (indices, offsets)
        })
        .collect()
}

fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("thread pool")
}

fn selected(filter: &Option<String>, id: &str) -> bool {
    filter.as_ref().is_none_or(|f| id.contains(f.as_str()))
}

fn bench_case(c: &mut Criterion, case: &Case, filter: &Option<String>, lines: &mut Vec<Line>) {
    let ids: Vec<String> = ["forward", "update", "step"]
        .iter()
        .flat_map(|g| THREADS.map(|t| format!("embedding_{g}/{}/{t}t", case.name)))
        .collect();
    if !ids.iter().any(|id| selected(filter, id)) {
        return; // do not build a 2 GiB table for nothing
    }
    let mut config = EmbeddingBagConfig::default();
    if let Some(pf) = std::env::var("EMB_PREFETCH")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        config.prefetch_distance = Some(pf);
    }
    let table = EmbeddingTable::new(case.config, 1).expect("table");
    eprintln!(
        "{}: {} x {} {:?}, {:.0} MiB, huge pages advised: {}, prefetch {:?}",
        case.name,
        case.config.rows,
        case.config.dim,
        case.config.table_type,
        (case.config.rows * case.config.dim * 4) as f64 / (1u64 << 20) as f64,
        table.huge_pages(),
        config.prefetch_distance
    );
    let mut emb = EmbeddingBags::new(vec![table], config).expect("embedding bags");
    let batches = index_batches(case.config.rows, 7);
    let dim = case.config.dim;
    let mut out = vec![0f32; BATCH * dim];
    let mut rng = Rng::new(3);
    let grad: Vec<f32> = (0..BATCH * dim)
        .map(|_| rng.uniform_in(-1e-3, 1e-3))
        .collect();
    let sgd = TableUpdate::Sgd { lr: 0.01 };
    let read_bytes = match case.config.table_type {
        TableType::F32 => 4,
        TableType::Bf16Split => 2,
    } * dim;
    let work = |group: &str| -> (f64, f64) {
        match group {
            "forward" => (LOOKUPS as f64, (LOOKUPS * read_bytes) as f64),
            "update" => (LOOKUPS as f64, (LOOKUPS * 2 * 4 * dim) as f64),
            _ => (
                LOOKUPS as f64,
                (LOOKUPS * (read_bytes + 2 * 4 * dim)) as f64,
            ),
        }
    };
    for group in ["forward", "update", "step"] {
        if group == "step" && !case.step {
            continue;
        }
        let mut g = c.benchmark_group(format!("embedding_{group}"));
        g.throughput(Throughput::Elements(LOOKUPS as u64));
        for threads in THREADS {
            let id = format!("embedding_{group}/{}/{threads}t", case.name);
            if !selected(filter, &id) {
                continue;
            }
            let tp = pool(threads);
            let mut k = 0;
            let bench_id = BenchmarkId::new(case.name, format!("{threads}t"));
            g.bench_function(bench_id, |b| {
                b.iter(|| {
                    k = (k + 1) % ROTATE;
                    let (indices, offsets) = &batches[k];
                    // Each call checks its bags, once, as a training step does.
                    tp.install(|| {
                        let bags = emb.check(&[Bags::new(indices, offsets)])?;
                        match group {
                            "forward" => emb.forward(&bags, &mut out),
                            "update" => emb.backward_update(&bags, &grad, sgd),
                            _ => emb
                                .forward(&bags, &mut out)
                                .and_then(|()| emb.backward_update(&bags, &grad, sgd)),
                        }
                    })
                    .expect("embedding call");
                    black_box(&out);
                })
            });
            let (lookups, bytes) = work(group);
            let crit_group = format!("embedding_{group}");
            let crit_id = format!("{}/{threads}t", case.name);
            let one_thread = (threads > 1).then(|| {
                (
                    "1 thread".to_string(),
                    crit_group.clone(),
                    format!("{}/1t", case.name),
                    lookups * 1e3,
                )
            });
            lines.push(Line {
                group: crit_group.clone(),
                id: crit_id.clone(),
                work: lookups * 1e3,
                unit: "M lookup/s",
                versus: one_thread,
            });
            lines.push(Line {
                group: crit_group,
                id: crit_id,
                work: bytes,
                unit: "GB/s",
                versus: None,
            });
        }
        g.finish();
    }
}

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20)
        .configure_from_args();
    // The first free argument (not a flag) is criterion's filter; reuse it to skip tables.
    let filter = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .filter(|a| !a.is_empty());
    let mut lines = Vec::new();
    for case in cases() {
        bench_case(&mut c, &case, &filter, &mut lines);
    }
    c.final_summary();
    print_summary("embedding bags", &lines);
}
