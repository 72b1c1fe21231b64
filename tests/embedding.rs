//! `EmbeddingBags` against a plain f64 reference, on every ISA this CPU has: the multi-table
//! forward (sum, mean, per-sample weights, empty bags, duplicates, both offset conventions,
//! i32/i64 indices, fp32 and bf16 tables, packed and strided layouts), the fused update (SGD
//! and row-wise Adagrad against dense-gradient references, Split-SGD exactly equal to fp32),
//! the same bits for 1, 2 and 3 threads, deterministic initialisation, and every error
//! leaving the tables (and the output) bit-identical.

use dlrm_kernels::embedding::{
    BagIndex, Bags, EmbeddingBagConfig, EmbeddingBags, EmbeddingTable, OffsetsKind, PooledLayout,
    Pooling, TableConfig, TableType,
};
use dlrm_kernels::optim::TableUpdate;
use dlrm_kernels::{Error, Isa, bf16};
use proptest::prelude::*;

const EPS32: f64 = f32::EPSILON as f64;

struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn value(&mut self) -> f32 {
        (self.next() % 2001) as f32 / 1000.0 - 1.0
    }
}

fn isas() -> Vec<Isa> {
    for isa in Isa::ALL {
        if !isa.is_available() {
            println!("skip: ISA {isa} not available on this CPU");
        }
    }
    Isa::available()
}

fn in_pool<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(f)
}

/// One table's bags for a batch, owned.
#[derive(Debug, Clone)]
struct TableBatch {
    indices: Vec<i64>,
    /// Bag starts, plus the end when `with_end`.
    offsets: Vec<i64>,
    with_end: bool,
    weights: Option<Vec<f32>>,
}

impl TableBatch {
    fn random(g: &mut Lcg, rows: usize, batch: usize, max_len: usize, weighted: bool) -> Self {
        let mut indices = Vec::new();
        let mut offsets = Vec::new();
        for _ in 0..batch {
            offsets.push(indices.len() as i64);
            // About one bag in five is empty.
            let len = if g.below(5) == 0 {
                0
            } else {
                g.below(max_len + 1)
            };
            for _ in 0..len {
                indices.push(g.below(rows) as i64);
            }
        }
        let with_end = g.below(2) == 0;
        if with_end {
            offsets.push(indices.len() as i64);
            // Unused trailing indices (and weights) after the end offset are allowed.
            if g.below(3) == 0 {
                indices.push(g.below(rows) as i64);
            }
        }
        let weights = weighted.then(|| indices.iter().map(|_| 2.0 * g.value()).collect());
        TableBatch {
            indices,
            offsets,
            with_end,
            weights,
        }
    }

    fn bag(&self, b: usize) -> std::ops::Range<usize> {
        let s = self.offsets[b] as usize;
        let e = self
            .offsets
            .get(b + 1)
            .map_or(self.indices.len(), |&o| o as usize);
        s..e
    }

    fn bags<'a, I: BagIndex>(&'a self, indices: &'a [I], offsets: &'a [I]) -> Bags<'a, I> {
        let b = if self.with_end {
            Bags::with_last_offset(indices, offsets)
        } else {
            Bags::new(indices, offsets)
        };
        match &self.weights {
            Some(w) => b.weighted(w),
            None => b,
        }
    }
}

/// A random multi-table problem.
#[derive(Debug, Clone)]
struct Problem {
    configs: Vec<TableConfig>,
    weights: Vec<Vec<f32>>,
    batches: Vec<TableBatch>,
    batch: usize,
    pooling: Pooling,
    layout: PooledLayout,
    grad: Vec<f32>,
}

impl Problem {
    fn new(seed: u64, max_rows: usize, max_batch: usize, max_len: usize) -> Self {
        let mut g = Lcg(seed);
        let ntables = 1 + g.below(3);
        let batch = g.below(max_batch + 1);
        let mean = g.below(3) == 0;
        let pooling = if mean { Pooling::Mean } else { Pooling::Sum };
        let dims = [1, 3, 15, 16, 17, 33, 64, 129];
        let configs: Vec<TableConfig> = (0..ntables)
            .map(|_| {
                let rows = 1 + g.below(max_rows);
                let dim = dims[g.below(dims.len())];
                if g.below(2) == 0 {
                    TableConfig::f32(rows, dim)
                } else {
                    TableConfig::bf16_split(rows, dim)
                }
            })
            .collect();
        let weights = configs
            .iter()
            .map(|c| (0..c.rows * c.dim).map(|_| g.value()).collect())
            .collect();
        let batches = configs
            .iter()
            .map(|c| {
                let weighted = !mean && g.below(2) == 0;
                TableBatch::random(&mut g, c.rows, batch, max_len, weighted)
            })
            .collect();
        let total: usize = configs.iter().map(|c| c.dim).sum();
        let layout = if g.below(2) == 0 {
            PooledLayout::Packed
        } else {
            PooledLayout::Strided {
                row_len: total + 5,
                first_column: 3,
            }
        };
        let row_len = match layout {
            PooledLayout::Packed => total,
            PooledLayout::Strided { row_len, .. } => row_len,
        };
        let grad = (0..batch * row_len).map(|_| g.value()).collect();
        Problem {
            configs,
            weights,
            batches,
            batch,
            pooling,
            layout,
            grad,
        }
    }

    fn config(&self) -> EmbeddingBagConfig {
        EmbeddingBagConfig {
            pooling: self.pooling,
            layout: self.layout,
            prefetch_distance: Some(4),
        }
    }

    fn tables(&self) -> Vec<EmbeddingTable> {
        self.configs
            .iter()
            .zip(&self.weights)
            .map(|(c, w)| EmbeddingTable::from_f32(*c, w).unwrap())
            .collect()
    }

    fn embedding(&self, isa: Isa) -> EmbeddingBags {
        EmbeddingBags::with_isa(self.tables(), self.config(), isa).unwrap()
    }

    /// (row_len, column of each table).
    fn columns(&self) -> (usize, Vec<usize>) {
        let (row_len, mut col) = match self.layout {
            PooledLayout::Packed => (self.configs.iter().map(|c| c.dim).sum(), 0),
            PooledLayout::Strided {
                row_len,
                first_column,
            } => (row_len, first_column),
        };
        let cols = self
            .configs
            .iter()
            .map(|c| {
                col += c.dim;
                col - c.dim
            })
            .collect();
        (row_len, cols)
    }

    fn i64_bags(&self) -> Vec<Bags<'_, i64>> {
        self.batches
            .iter()
            .map(|b| b.bags(&b.indices, &b.offsets))
            .collect()
    }

    /// The lookup scale of position `j` in bag `b` of table `t`.
    fn scale(&self, t: usize, b: usize, j: usize) -> f64 {
        let tb = &self.batches[t];
        match (&tb.weights, self.pooling) {
            (Some(w), _) => f64::from(w[j]),
            (None, Pooling::Mean) => 1.0 / tb.bag(b).len() as f64,
            (None, Pooling::Sum) => 1.0,
        }
    }

    /// f64 forward: (value, sum of |terms|) per output element; untouched columns are None.
    fn ref_forward(&self, read: &[Vec<f64>]) -> Vec<Option<(f64, f64)>> {
        let (row_len, cols) = self.columns();
        let mut out = vec![None; self.batch * row_len];
        for (t, c) in self.configs.iter().enumerate() {
            for b in 0..self.batch {
                for d in 0..c.dim {
                    let (mut v, mut a) = (0.0, 0.0);
                    for j in self.batches[t].bag(b) {
                        let r = self.batches[t].indices[j] as usize;
                        let term = self.scale(t, b, j) * read[t][r * c.dim + d];
                        v += term;
                        a += term.abs();
                    }
                    out[b * row_len + cols[t] + d] = Some((v, a));
                }
            }
        }
        out
    }

    /// Dense f64 gradient of every table: (value, sum of |terms|, lookups of the row).
    fn ref_dense_grad(&self) -> Vec<(Vec<f64>, Vec<f64>, Vec<usize>)> {
        let (row_len, cols) = self.columns();
        self.configs
            .iter()
            .enumerate()
            .map(|(t, c)| {
                let mut g = vec![0f64; c.rows * c.dim];
                let mut a = vec![0f64; c.rows * c.dim];
                let mut n = vec![0usize; c.rows];
                for b in 0..self.batch {
                    for j in self.batches[t].bag(b) {
                        let r = self.batches[t].indices[j] as usize;
                        n[r] += 1;
                        for d in 0..c.dim {
                            let term = self.scale(t, b, j)
                                * f64::from(self.grad[b * row_len + cols[t] + d]);
                            g[r * c.dim + d] += term;
                            a[r * c.dim + d] += term.abs();
                        }
                    }
                }
                (g, a, n)
            })
            .collect()
    }
}

fn table_bits(emb: &EmbeddingBags) -> Vec<Vec<u32>> {
    emb.tables()
        .iter()
        .map(|t| {
            let mut bits: Vec<u32> = t.master_weights().iter().map(|x| x.to_bits()).collect();
            if let Some(h) = t.adagrad_state() {
                bits.extend(h.iter().map(|x| x.to_bits()));
            }
            bits
        })
        .collect()
}

fn f32_bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn forward_matches_reference(seed in any::<u64>()) {
        let p = Problem::new(seed, 60, 12, 9);
        // What the forward reads: fp32 weights, or the bf16 upper halves (truncation).
        let read: Vec<Vec<f64>> = p.configs.iter().zip(&p.weights).map(|(c, w)| {
            w.iter().map(|&x| match c.table_type {
                TableType::F32 => f64::from(x),
                TableType::Bf16Split => f64::from(f32::from_bits(x.to_bits() & 0xffff_0000)),
            }).collect()
        }).collect();
        let want = p.ref_forward(&read);
        let mut first: Option<Vec<u32>> = None;
        for isa in isas() {
            let emb = p.embedding(isa);
            let mut out = vec![f32::NAN; want.len()];
            emb.forward(&emb.check(&p.i64_bags()).unwrap(), &mut out).unwrap();
            for (i, (&got, w)) in out.iter().zip(&want).enumerate() {
                match w {
                    None => prop_assert!(got.is_nan(), "{}: column {} of the layout written", isa, i),
                    Some((v, a)) => {
                        let tol = 12.0 * EPS32 * a + 1e-30;
                        prop_assert!((f64::from(got) - v).abs() <= tol, "{}: {} vs {} at {}", isa, got, v, i);
                    }
                }
            }
            // Every ISA gives the same bits; i32 indices give the same as i64.
            match &first {
                None => first = Some(f32_bits(&out)),
                Some(f) => prop_assert_eq!(&f32_bits(&out), f, "{}", isa),
            }
            let idx32: Vec<(Vec<i32>, Vec<i32>)> = p.batches.iter().map(|b| {
                (b.indices.iter().map(|&i| i as i32).collect(), b.offsets.iter().map(|&i| i as i32).collect())
            }).collect();
            let bags32: Vec<Bags<'_, i32>> = p.batches.iter().zip(&idx32).map(|(b, (i, o))| b.bags(i, o)).collect();
            let mut out32 = vec![f32::NAN; want.len()];
            emb.forward(&emb.check(&bags32).unwrap(), &mut out32).unwrap();
            prop_assert_eq!(f32_bits(&out32), f32_bits(&out));
            // bf16 output: the f32 output rounded to nearest even.
            let mut out16 = vec![bf16::from_f32(f32::NAN); want.len()];
            emb.forward(&emb.check(&p.i64_bags()).unwrap(), &mut out16).unwrap();
            for (x, y) in out16.iter().zip(&out) {
                if !y.is_nan() {
                    prop_assert_eq!(x.to_bits(), bf16::from_f32(*y).to_bits());
                }
            }
        }
    }

    #[test]
    fn bf16_forward_is_within_truncation_tolerance_of_the_master(seed in any::<u64>()) {
        let mut p = Problem::new(seed, 60, 12, 9);
        for c in &mut p.configs {
            c.table_type = TableType::Bf16Split;
        }
        // Against the fp32 master weights: truncation to bf16 costs < 2^-7 relative.
        let read: Vec<Vec<f64>> = p.weights.iter().map(|w| w.iter().map(|&x| f64::from(x)).collect()).collect();
        let want = p.ref_forward(&read);
        let emb = p.embedding(Isa::best());
        let mut out = vec![f32::NAN; want.len()];
        emb.forward(&emb.check(&p.i64_bags()).unwrap(), &mut out).unwrap();
        for (got, w) in out.iter().zip(&want) {
            if let Some((v, a)) = w {
                let tol = (2f64.powi(-7) + 12.0 * EPS32) * a + 1e-30;
                prop_assert!((f64::from(*got) - v).abs() <= tol, "{} vs {}", got, v);
            }
        }
    }

    #[test]
    fn sgd_and_adagrad_match_the_dense_reference(seed in any::<u64>(), adagrad in any::<bool>()) {
        let p = Problem::new(seed, 40, 12, 9);
        let lr = 0.05f32;
        let eps = 1e-3f32;
        let opt = if adagrad { TableUpdate::RowwiseAdagrad { lr, eps } } else { TableUpdate::Sgd { lr } };
        let dense = p.ref_dense_grad();
        let mut first: Option<Vec<Vec<u32>>> = None;
        for isa in isas() {
            let mut emb = p.embedding(isa);
            // Two steps, so Adagrad's accumulator is exercised with a non-zero start.
            emb.backward_update(&emb.check(&p.i64_bags()).unwrap(), &p.grad, opt).unwrap();
            emb.backward_update(&emb.check(&p.i64_bags()).unwrap(), &p.grad, opt).unwrap();
            for (t, table) in emb.tables().iter().enumerate() {
                let (g, a, n) = &dense[t];
                let dim = table.dim();
                let mut want: Vec<f64> = p.weights[t].iter().map(|&x| f64::from(x)).collect();
                let mut h = vec![0f64; table.rows()];
                for _ in 0..2 {
                    for r in 0..table.rows() {
                        if n[r] == 0 {
                            continue;
                        }
                        let gr = &g[r * dim..][..dim];
                        let denom = if adagrad {
                            h[r] += gr.iter().map(|x| x * x).sum::<f64>() / dim as f64;
                            h[r].sqrt() + f64::from(eps)
                        } else {
                            1.0
                        };
                        for d in 0..dim {
                            want[r * dim + d] -= f64::from(lr) * gr[d] / denom;
                        }
                    }
                }
                let got = table.master_weights();
                for (i, (&x, &w)) in got.iter().zip(&want).enumerate() {
                    let r = i / dim;
                    let acc_err = (n[r] + 2) as f64 * EPS32 * a[i];
                    let tol = if adagrad {
                        // Relative to the step size lr * g / sqrt(h), including h's own error
                        // when g is tiny compared with its terms.
                        let denom = h[r].sqrt() + f64::from(eps);
                        let rms = (h[r] / 2.0).sqrt().max(1e-30);
                        2.0 * f64::from(lr) * (4.0 * acc_err + 1e-5 * g[i].abs()) / denom
                            + 2.0 * f64::from(lr) * acc_err / rms
                    } else {
                        2.0 * f64::from(lr) * (acc_err + 2.0 * EPS32 * g[i].abs())
                    } + 4.0 * EPS32 * (w.abs() + f64::from(lr) * a[i]);
                    prop_assert!((f64::from(x) - w).abs() <= tol, "{} table {} element {}: {} vs {}", isa, t, i, x, w);
                }
                if adagrad {
                    let state = table.adagrad_state().unwrap();
                    for (r, (&x, &w)) in state.iter().zip(&h).enumerate() {
                        // g's own f32 error e (as above) moves each g^2 by up to 2|g|e + e^2,
                        // which dominates when g is small next to its terms; two steps.
                        let g_err: f64 = (0..dim)
                            .map(|d| {
                                let e = (n[r] + 2) as f64 * EPS32 * a[r * dim + d];
                                2.0 * g[r * dim + d].abs() * e + e * e
                            })
                            .sum::<f64>()
                            / dim as f64;
                        let tol = 1e-5 * w + 2.0 * g_err + 1e-30;
                        prop_assert!((f64::from(x) - w).abs() <= tol, "h[{}]: {} vs {}", r, x, w);
                    }
                }
            }
            match &first {
                None => first = Some(table_bits(&emb)),
                Some(f) => prop_assert_eq!(&table_bits(&emb), f, "{} differs from the first ISA", isa),
            }
        }
    }

    #[test]
    fn split_sgd_is_bit_identical_to_fp32(seed in any::<u64>(), adagrad in any::<bool>()) {
        let p = Problem::new(seed, 40, 12, 9);
        let opt = if adagrad { TableUpdate::rowwise_adagrad(0.1) } else { TableUpdate::Sgd { lr: 0.1 } };
        let mut f32_twin = p.clone();
        let mut split_twin = p.clone();
        for c in &mut f32_twin.configs {
            c.table_type = TableType::F32;
        }
        for c in &mut split_twin.configs {
            c.table_type = TableType::Bf16Split;
        }
        for isa in isas() {
            let mut a = f32_twin.embedding(isa);
            let mut b = split_twin.embedding(isa);
            for _ in 0..3 {
                a.backward_update(&a.check(&p.i64_bags()).unwrap(), &p.grad, opt).unwrap();
                b.backward_update(&b.check(&p.i64_bags()).unwrap(), &p.grad, opt).unwrap();
            }
            prop_assert_eq!(table_bits(&a), table_bits(&b), "{}", isa);
        }
    }
}

#[test]
fn same_bits_for_1_2_and_3_threads() {
    // Large enough for several chunks, buckets and row groups per table; rows few enough
    // for many duplicates in table 1.
    let mut g = Lcg(99);
    let configs = [
        TableConfig::f32(5000, 17),
        TableConfig::bf16_split(37, 64),
        TableConfig::f32(100_000, 33),
    ];
    let batch = 300;
    let batches: Vec<TableBatch> = configs
        .iter()
        .enumerate()
        .map(|(t, c)| TableBatch::random(&mut g, c.rows, batch, 40, t == 2))
        .collect();
    let bags: Vec<Bags<'_, i64>> = batches
        .iter()
        .map(|b| b.bags(&b.indices, &b.offsets))
        .collect();
    let row_len: usize = configs.iter().map(|c| c.dim).sum();
    let grad: Vec<f32> = (0..batch * row_len).map(|_| g.value()).collect();
    for isa in isas() {
        let mut results = Vec::new();
        for threads in [1, 2, 3] {
            results.push(in_pool(threads, || {
                let tables = configs
                    .iter()
                    .enumerate()
                    .map(|(t, c)| EmbeddingTable::new(*c, t as u64).unwrap())
                    .collect();
                let mut emb =
                    EmbeddingBags::with_isa(tables, EmbeddingBagConfig::default(), isa).unwrap();
                let init = table_bits(&emb);
                let mut outs = Vec::new();
                for step in 0..3 {
                    let mut out = vec![0f32; batch * row_len];
                    emb.forward(&emb.check(&bags).unwrap(), &mut out).unwrap();
                    outs.push(f32_bits(&out));
                    let opt = if step == 1 {
                        TableUpdate::Sgd { lr: 0.1 }
                    } else {
                        TableUpdate::rowwise_adagrad(0.1)
                    };
                    emb.backward_update(&emb.check(&bags).unwrap(), &grad, opt)
                        .unwrap();
                }
                (init, outs, table_bits(&emb))
            }));
        }
        assert!(
            results.iter().all(|r| r == &results[0]),
            "{isa}: results differ between 1, 2 and 3 threads"
        );
        assert_ne!(results[0].0, results[0].2, "{isa}: nothing was updated");
    }
}

#[test]
fn init_is_deterministic_bounded_and_the_same_for_both_types() {
    let rows = 3 * 4096 + 5;
    let a = in_pool(1, || {
        EmbeddingTable::new(TableConfig::f32(rows, 7), 42).unwrap()
    });
    let b = in_pool(3, || {
        EmbeddingTable::new(TableConfig::bf16_split(rows, 7), 42).unwrap()
    });
    assert_eq!(a.master_weights(), b.master_weights());
    let c = EmbeddingTable::new(TableConfig::f32(rows, 7), 43).unwrap();
    assert_ne!(a.master_weights(), c.master_weights());
    let bound = (1.0 / rows as f64).sqrt() as f32;
    let w = a.master_weights();
    assert!(w.iter().all(|x| x.abs() <= bound));
    let mean = w.iter().map(|&x| f64::from(x)).sum::<f64>() / w.len() as f64;
    let var = w.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>() / w.len() as f64;
    assert!(mean.abs() < 0.01 * f64::from(bound));
    // U(-b, b) has variance b^2 / 3.
    assert!((var / f64::from(bound).powi(2) - 1.0 / 3.0).abs() < 0.01);
    let (hi, _) = b.split_halves().unwrap();
    assert_eq!(hi[0].to_bits(), (w[0].to_bits() >> 16) as u16);
}

#[test]
fn large_tables_are_huge_page_backed() {
    let t = EmbeddingTable::zeros(TableConfig::f32(1 << 16, 16)).unwrap(); // 4 MiB
    println!("huge pages advised: {}", t.huge_pages());
    let thp = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
        .is_ok_and(|s| !s.contains("[never]"));
    if cfg!(target_os = "linux") && thp {
        assert!(t.huge_pages());
    }
}

/// A two-table setup for the error cases: table 1 is the one given bad input.
struct ErrorCase {
    emb: EmbeddingBags,
    idx0: Vec<i64>,
    off0: Vec<i64>,
}

impl ErrorCase {
    fn new() -> Self {
        let tables = vec![
            EmbeddingTable::new(TableConfig::f32(10, 4), 1).unwrap(),
            EmbeddingTable::new(TableConfig::bf16_split(10, 4), 2).unwrap(),
        ];
        ErrorCase {
            emb: EmbeddingBags::new(tables, EmbeddingBagConfig::default()).unwrap(),
            idx0: vec![1, 2, 3, 4],
            off0: vec![0, 2, 3],
        }
    }

    /// Check table 1's bags (beside table 0's good ones): the check, the one place the
    /// forward and the update take their bags from, must fail and change nothing.
    fn fails(&mut self, bags1: Bags<'_, i64>) -> Error {
        let before = table_bits(&self.emb);
        let bags = [Bags::new(&self.idx0, &self.off0), bags1];
        let e1 = self.emb.check(&bags).unwrap_err();
        // The same error whichever order the tables are checked in: table 0's bags are good.
        let again = self.emb.check(&bags).unwrap_err();
        assert_eq!(e1, again);
        assert_eq!(
            table_bits(&self.emb),
            before,
            "a table changed on error: {e1}"
        );
        e1
    }
}

#[test]
fn every_error_names_its_place_and_changes_nothing() {
    let mut c = ErrorCase::new();
    let msg = |e: Error| e.to_string();
    assert_eq!(
        msg(c.fails(Bags::new(&[0, 9, 10, 1], &[0, 1, 2]))),
        "table 1, bag 2, position 2: index 10 >= rows 10"
    );
    assert_eq!(
        c.fails(Bags::new(&[0, 9, 1, -1], &[0, 1, 2])),
        Error::IndexOutOfRange {
            table: 1,
            bag: 2,
            position: 3,
            index: -1,
            rows: 10
        }
    );
    // Empty bag 1: position 1 belongs to bag 2.
    assert!(matches!(
        c.fails(Bags::new(&[0, 99], &[0, 1, 1])),
        Error::IndexOutOfRange {
            table: 1,
            bag: 2,
            position: 1,
            ..
        }
    ));
    assert_eq!(
        msg(c.fails(Bags::new(&[0, 1], &[1, 1, 2]))),
        "table 1, bag 0: bad offsets: the first offset is 1, must be 0"
    );
    assert_eq!(
        msg(c.fails(Bags::new(&[0, 1], &[0, 2, 1]))),
        "table 1, bag 2: bad offsets: offset 1 is smaller than the previous offset 2"
    );
    assert_eq!(
        msg(c.fails(Bags::new(&[0, 1], &[0, 1, 3]))),
        "table 1, bag 2: bad offsets: offset 3 is past the number of indices 2"
    );
    assert_eq!(
        msg(c.fails(Bags::with_last_offset(&[0, 1], &[0, 1, 1, 3]))),
        "table 1, bag 2: bad offsets: end offset 3 is past the number of indices 2"
    );
    assert!(matches!(
        c.fails(Bags::with_last_offset(&[0, 1], &[])),
        Error::Offsets {
            table: 1,
            bag: 0,
            ..
        }
    ));
    assert_eq!(
        msg(c.fails(Bags::new(&[0, 1], &[0, 1]))),
        "table 1: bags (as many as table 0 has): expected 3, got 2"
    );
    assert_eq!(
        msg(c.fails(Bags::new(&[0, 1], &[0, 1, 1]).weighted(&[1.0]))),
        "table 1: per-sample weights (one per index): expected 2, got 1"
    );

    // Weights with mean pooling.
    let tables = vec![EmbeddingTable::zeros(TableConfig::f32(4, 2)).unwrap()];
    let config = EmbeddingBagConfig {
        pooling: Pooling::Mean,
        ..EmbeddingBagConfig::default()
    };
    let mut emb = EmbeddingBags::new(tables, config).unwrap();
    let bags = [Bags::new(&[1i32], &[0]).weighted(&[2.0])];
    assert!(matches!(emb.check(&bags), Err(Error::Config(_))));
    // Checked by tables of another size or pooling: refused by these, writing nothing.
    let other = EmbeddingBags::new(
        vec![EmbeddingTable::zeros(TableConfig::f32(5, 2)).unwrap()],
        EmbeddingBagConfig::default(),
    )
    .unwrap();
    let mut out = [f32::NAN; 2];
    for foreign in [
        other.check(&bags).unwrap(),
        other.check(&[Bags::new(&[1i32], &[0])]).unwrap(),
    ] {
        assert!(matches!(
            emb.forward(&foreign, &mut out),
            Err(Error::Config(_))
        ));
        let sgd = TableUpdate::Sgd { lr: 1.0 };
        assert!(matches!(
            emb.backward_update(&foreign, &[1.0; 2], sgd),
            Err(Error::Config(_))
        ));
    }
    assert!(out.iter().all(|x| x.is_nan()));

    // Output, gradient, bag-list and optimizer shapes.
    let bags = [Bags::new(&[1i32], &[0])];
    let mut short = [f32::NAN; 1];
    assert_eq!(
        emb.forward(&emb.check(&bags).unwrap(), &mut short)
            .unwrap_err()
            .to_string(),
        "pooled output ([B][row_len]): expected 2, got 1"
    );
    assert!(short[0].is_nan());
    let before = table_bits(&emb);
    assert!(matches!(
        emb.backward_update(
            &emb.check(&bags).unwrap(),
            &[1.0; 3],
            TableUpdate::Sgd { lr: 1.0 }
        ),
        Err(Error::Shape { .. })
    ));
    assert!(matches!(emb.check::<i32>(&[]), Err(Error::Shape { .. })));
    assert!(matches!(
        emb.backward_update(
            &emb.check(&bags).unwrap(),
            &[1.0; 2],
            TableUpdate::Sgd { lr: f32::NAN }
        ),
        Err(Error::Config(_))
    ));
    assert!(matches!(
        emb.backward_update(
            &emb.check(&bags).unwrap(),
            &[1.0; 2],
            TableUpdate::RowwiseAdagrad { lr: 1.0, eps: -1.0 }
        ),
        Err(Error::Config(_))
    ));
    assert_eq!(table_bits(&emb), before);
}

#[test]
fn configuration_errors() {
    assert!(matches!(
        EmbeddingTable::zeros(TableConfig::f32(0, 4)),
        Err(Error::Config(_))
    ));
    assert!(matches!(
        EmbeddingTable::zeros(TableConfig::f32(4, 0)),
        Err(Error::Config(_))
    ));
    assert!(matches!(
        EmbeddingTable::from_f32(TableConfig::f32(2, 2), &[1.0; 3]),
        Err(Error::Shape { .. })
    ));
    assert!(matches!(
        EmbeddingBags::new(vec![], EmbeddingBagConfig::default()),
        Err(Error::Config(_))
    ));
    let t = EmbeddingTable::zeros(TableConfig::f32(4, 8)).unwrap();
    let config = EmbeddingBagConfig {
        layout: PooledLayout::Strided {
            row_len: 8,
            first_column: 1,
        },
        ..EmbeddingBagConfig::default()
    };
    assert!(matches!(
        EmbeddingBags::new(vec![t], config),
        Err(Error::Config(_))
    ));
}

#[test]
fn offsets_kinds_agree_and_empty_batches_work() {
    let t = EmbeddingTable::new(TableConfig::f32(20, 5), 3).unwrap();
    let emb = EmbeddingBags::new(vec![t], EmbeddingBagConfig::default()).unwrap();
    let idx = [3i64, 4, 5, 19];
    let mut a = [0f32; 15];
    let mut b = [0f32; 15];
    emb.forward(&emb.check(&[Bags::new(&idx, &[0, 1, 1])]).unwrap(), &mut a)
        .unwrap();
    let ends = [Bags::with_last_offset(&idx, &[0, 1, 1, 4])];
    emb.forward(&emb.check(&ends).unwrap(), &mut b).unwrap();
    assert_eq!(a, b);
    assert_eq!(
        Bags::with_last_offset(&idx, &[0, 4]).offsets_kind,
        OffsetsKind::StartsAndEnd
    );
    // B = 0.
    let mut none: [f32; 0] = [];
    emb.forward(
        &emb.check(&[Bags::<i64>::new(&[], &[])]).unwrap(),
        &mut none,
    )
    .unwrap();
    emb.forward(
        &emb.check(&[Bags::<i64>::with_last_offset(&[], &[0])])
            .unwrap(),
        &mut none,
    )
    .unwrap();
    let mut emb = emb;
    let before = table_bits(&emb);
    let sgd = TableUpdate::Sgd { lr: 1.0 };
    let no_bags = [Bags::<i64>::new(&[], &[])];
    emb.backward_update(&emb.check(&no_bags).unwrap(), &[], sgd)
        .unwrap();
    // All bags empty: nothing changes.
    let empty = [Bags::<i64>::new(&[], &[0, 0])];
    emb.backward_update(&emb.check(&empty).unwrap(), &[1.0; 10], sgd)
        .unwrap();
    assert_eq!(table_bits(&emb), before);
}

/// A negative index is reported as negative, not as "-2 >= rows 10".
#[test]
fn a_negative_index_is_reported_as_negative() {
    let mut c = ErrorCase::new();
    let err = c.fails(Bags::new(&[0, 9, 1, -2], &[0, 1, 2]));
    assert_eq!(
        err.to_string(),
        "table 1, bag 2, position 3: index -2 is negative (rows are 0 to 9)"
    );
    let err = c.fails(Bags::new(&[0, 10], &[0, 1, 2]));
    assert_eq!(
        err.to_string(),
        "table 1, bag 1, position 1: index 10 >= rows 10"
    );
}
