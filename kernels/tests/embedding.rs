//! Embedding-bag kernels against a plain f64 reference, on every ISA this CPU has: pooling
//! (sum, mean, weights, empty bags, duplicates, f32/bf16 tables and outputs, i32/i64 indices,
//! dims that are not multiples of 16), the fused update (SGD, row-wise Adagrad, Split-SGD;
//! lookups in runs or grouped by the kernel), bit-equality across ISAs, errors that write nothing,
//! and huge-page buffers.

use dlrm_microkernels::embedding::{
    BagError, BagIndex, BagKernel, BagKernelDesc, Bags, CheckedBags, GradRows, GroupBuffers,
    HUGE_PAGE, HugePageBuf, Lookup, Pooling, RowUpdate, RowsMut,
};
use dlrm_microkernels::{Element, Isa, KernelError, bf16};
use proptest::prelude::*;

const DIMS: [usize; 12] = [1, 2, 15, 16, 17, 31, 33, 48, 64, 100, 129, 160];
const EPS32: f64 = f32::EPSILON as f64;

/// A tiny deterministic generator for test data.
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

/// A batch of bags over `rows` rows.
#[derive(Debug, Clone)]
struct Batch {
    rows: usize,
    dim: usize,
    table: Vec<f32>,
    indices: Vec<i64>,
    offsets: Vec<i64>,
    weights: Option<Vec<f32>>,
}

fn batch(rows: usize, dim: usize, lens: &[usize], weighted: bool, seed: u64) -> Batch {
    let mut g = Lcg(seed);
    let table = (0..rows * dim).map(|_| g.value()).collect();
    let mut indices = Vec::new();
    let mut offsets = Vec::new();
    for &len in lens {
        offsets.push(indices.len() as i64);
        for _ in 0..len {
            indices.push(g.below(rows) as i64);
        }
    }
    let weights = weighted.then(|| indices.iter().map(|_| g.value() * 2.0).collect());
    Batch {
        rows,
        dim,
        table,
        indices,
        offsets,
        weights,
    }
}

fn batch_strategy() -> impl Strategy<Value = (Batch, bool)> {
    (
        1usize..40,
        prop::sample::select(DIMS.to_vec()),
        prop::collection::vec(0usize..9, 0..12),
        any::<bool>(),
        any::<bool>(),
        any::<u64>(),
    )
        .prop_map(|(rows, dim, lens, weighted, mean, seed)| {
            (batch(rows, dim, &lens, weighted, seed), mean)
        })
}

/// f64 reference of pooling, with the table values as the kernel reads them.
fn ref_pool(b: &Batch, table: &[f64], mean: bool) -> (Vec<f64>, Vec<f64>) {
    let nb = b.offsets.len();
    let mut out = vec![0f64; nb * b.dim];
    let mut abs = vec![0f64; nb * b.dim];
    for bag in 0..nb {
        let s = b.offsets[bag] as usize;
        let e = b
            .offsets
            .get(bag + 1)
            .map_or(b.indices.len(), |&o| o as usize);
        for j in s..e {
            let w = b.weights.as_ref().map_or(1.0, |w| f64::from(w[j]));
            let r = b.indices[j] as usize;
            for d in 0..b.dim {
                out[bag * b.dim + d] += w * table[r * b.dim + d];
                abs[bag * b.dim + d] += (w * table[r * b.dim + d]).abs();
            }
        }
        if mean && e > s {
            for d in 0..b.dim {
                out[bag * b.dim + d] /= (e - s) as f64;
                abs[bag * b.dim + d] /= (e - s) as f64;
            }
        }
    }
    (out, abs)
}

/// Pool `b` with table type `T` and output type `O` on `isa`, into rows of `stride` that are
/// pre-filled with NaN; checks that the gaps stay NaN and returns the pooled rows as f32.
fn run_pool<T: Element, I: BagIndex, O: Element>(
    b: &Batch,
    table: &[T],
    indices: &[I],
    offsets: &[I],
    mean: bool,
    isa: Isa,
    prefetch: usize,
) -> Vec<f32> {
    let stride = b.dim + 3;
    let nb = offsets.len();
    let mut out = vec![O::from_f32(f32::NAN); nb * stride + 5];
    let bags = Bags {
        indices,
        offsets,
        end: indices.len(),
        weights: b.weights.as_deref(),
    };
    let desc = BagKernelDesc {
        dim: b.dim,
        prefetch_distance: prefetch,
    };
    let pooling = if mean { Pooling::Mean } else { Pooling::Sum };
    let bags = CheckedBags::new(bags, table.len() / b.dim).unwrap();
    BagKernel::with_isa(desc, isa)
        .unwrap()
        .pool(table, &bags, pooling, &mut out, stride)
        .unwrap();
    let mut rows = Vec::new();
    for (i, x) in out.iter().enumerate() {
        let in_row = i < nb * stride && i % stride < b.dim;
        if in_row {
            rows.push(x.to_f32());
        } else {
            assert!(x.to_f32().is_nan(), "{isa}: wrote outside the rows at {i}");
        }
    }
    rows
}

/// Split-SGD halves of f32 weights: the upper 16 bits (bf16) and the lower 16 bits.
fn split_halves(w: &[f32]) -> (Vec<bf16>, Vec<u16>) {
    let hi = w
        .iter()
        .map(|x| bf16::from_bits((x.to_bits() >> 16) as u16))
        .collect();
    let lo = w.iter().map(|x| x.to_bits() as u16).collect();
    (hi, lo)
}

/// The f32 weights the halves hold, into `w`.
fn join_halves(hi: &[bf16], lo: &[u16], w: &mut [f32]) {
    for ((x, h), l) in w.iter_mut().zip(hi).zip(lo) {
        *x = f32::from_bits((u32::from(h.to_bits()) << 16) | u32::from(*l));
    }
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn pool_f32_matches_reference_and_every_isa((b, mean) in batch_strategy()) {
        let table64: Vec<f64> = b.table.iter().map(|&x| f64::from(x)).collect();
        let (want, abs) = ref_pool(&b, &table64, mean);
        let idx32: Vec<i32> = b.indices.iter().map(|&i| i as i32).collect();
        let off32: Vec<i32> = b.offsets.iter().map(|&i| i as i32).collect();
        let portable = run_pool::<f32, i64, f32>(&b, &b.table, &b.indices, &b.offsets, mean, Isa::Portable, 0);
        let max_len = 9.0;
        for (i, (&got, (&w, &a))) in portable.iter().zip(want.iter().zip(&abs)).enumerate() {
            let tol = (max_len + 2.0) * EPS32 * a + 1e-30;
            prop_assert!((f64::from(got) - w).abs() <= tol, "element {i}: {got} vs {w}");
        }
        for isa in isas() {
            for pf in [0, 1, 8] {
                let got = run_pool::<f32, i64, f32>(&b, &b.table, &b.indices, &b.offsets, mean, isa, pf);
                prop_assert_eq!(bits(&got), bits(&portable), "{} i64 prefetch {}", isa, pf);
                let got = run_pool::<f32, i32, f32>(&b, &b.table, &idx32, &off32, mean, isa, pf);
                prop_assert_eq!(bits(&got), bits(&portable), "{} i32", isa);
            }
            // bf16 output: the f32 result rounded to nearest even.
            let got = run_pool::<f32, i64, bf16>(&b, &b.table, &b.indices, &b.offsets, mean, isa, 4);
            let rounded: Vec<f32> = portable.iter().map(|&x| bf16::from_f32(x).to_f32()).collect();
            prop_assert_eq!(bits(&got), bits(&rounded), "{} bf16 out", isa);
        }
    }

    #[test]
    fn pool_bf16_table_within_tolerance((b, mean) in batch_strategy()) {
        let table: Vec<bf16> = b.table.iter().map(|&x| bf16::from_f32(x)).collect();
        // Reference on the master values: rounding to bf16 costs at most 2^-8 relative per
        // element.
        let table64: Vec<f64> = b.table.iter().map(|&x| f64::from(x)).collect();
        let (want, abs) = ref_pool(&b, &table64, mean);
        let portable = run_pool::<bf16, i64, f32>(&b, &table, &b.indices, &b.offsets, mean, Isa::Portable, 0);
        for (i, (&got, (&w, &a))) in portable.iter().zip(want.iter().zip(&abs)).enumerate() {
            let tol = (2f64.powi(-8) + 11.0 * EPS32) * a + 1e-30;
            prop_assert!((f64::from(got) - w).abs() <= tol, "element {i}: {got} vs {w}");
        }
        for isa in isas() {
            let got = run_pool::<bf16, i64, f32>(&b, &table, &b.indices, &b.offsets, mean, isa, 3);
            prop_assert_eq!(bits(&got), bits(&portable), "{}", isa);
            let got = run_pool::<bf16, i64, bf16>(&b, &table, &b.indices, &b.offsets, mean, isa, 3);
            let rounded: Vec<f32> = portable.iter().map(|&x| bf16::from_f32(x).to_f32()).collect();
            prop_assert_eq!(bits(&got), bits(&rounded), "{} bf16 out", isa);
        }
    }

    #[test]
    fn apply_matches_reference_every_isa_and_split((b, _) in batch_strategy(), adagrad in any::<bool>(), first in 0usize..3) {
        // Lookups sorted by row (stable), as the caller prepares them; bags get a gradient row.
        let nb = b.offsets.len().max(1);
        let gstride = b.dim + 1;
        let mut g = Lcg(b.indices.len() as u64 + 17);
        let grad: Vec<f32> = (0..nb * gstride).map(|_| g.value()).collect();
        let mut lookups: Vec<Lookup> = Vec::new();
        for bag in 0..b.offsets.len() {
            let s = b.offsets[bag] as usize;
            let e = b.offsets.get(bag + 1).map_or(b.indices.len(), |&o| o as usize);
            for j in s..e {
                let scale = b.weights.as_ref().map_or(1.0, |w| w[j]);
                lookups.push(Lookup { row: (b.indices[j] as usize + first) as u32, bag: bag as u32, scale });
            }
        }
        lookups.sort_by_key(|l| l.row);
        let (lr, eps) = (0.05f32, 1e-3f32);

        // f64 reference: dense gradient, coalesced, one update per touched row.
        let dim = b.dim;
        let mut dense = vec![0f64; b.rows * dim];
        let mut dense_abs = vec![0f64; b.rows * dim];
        let mut count = vec![0usize; b.rows];
        for l in &lookups {
            let r = l.row as usize - first;
            count[r] += 1;
            for d in 0..dim {
                let term = f64::from(l.scale) * f64::from(grad[l.bag as usize * gstride + d]);
                dense[r * dim + d] += term;
                dense_abs[r * dim + d] += term.abs();
            }
        }
        let touched: Vec<bool> = count.iter().map(|&c| c > 0).collect();
        let mut want: Vec<f64> = b.table.iter().map(|&x| f64::from(x)).collect();
        let mut want_h = vec![0.25f64; b.rows];
        for r in 0..b.rows {
            if !touched[r] {
                continue;
            }
            let gr = &dense[r * dim..][..dim];
            if adagrad {
                want_h[r] += gr.iter().map(|x| x * x).sum::<f64>() / dim as f64;
                let denom = want_h[r].sqrt() + f64::from(eps);
                for d in 0..dim {
                    want[r * dim + d] -= f64::from(lr) * gr[d] / denom;
                }
            } else {
                for d in 0..dim {
                    want[r * dim + d] -= f64::from(lr) * gr[d];
                }
            }
        }

        let run = |isa: Isa, split: bool| -> (Vec<f32>, Vec<f32>) {
            let k = BagKernel::with_isa(BagKernelDesc { dim, prefetch_distance: 2 }, isa).unwrap();
            let mut w = b.table.clone();
            let mut h = vec![0.25f32; b.rows];
            let grows = GradRows { data: &grad, stride: gstride };
            let update = if adagrad {
                RowUpdate::RowwiseAdagrad { lr, eps, state: &mut h }
            } else {
                RowUpdate::Sgd { lr }
            };
            if split {
                let (mut hi, mut lo) = split_halves(&w);
                k.apply(RowsMut::Split { hi: &mut hi, lo: &mut lo }, first, &lookups, grows, update).unwrap();
                join_halves(&hi, &lo, &mut w);
            } else {
                k.apply(RowsMut::F32(&mut w), first, &lookups, grows, update).unwrap();
            }
            (w, h)
        };
        let (portable, portable_h) = run(Isa::Portable, false);
        // f32 accumulation of L terms: error <= (L + 2) eps sum|terms|; Adagrad divides by
        // sqrt(h) + eps >= 0.5 (h starts at 0.25) and adds a few roundings of its own.
        for (i, (&got, &w)) in portable.iter().zip(&want).enumerate() {
            let r = i / dim;
            let acc_err = (count[r] + 2) as f64 * EPS32 * dense_abs[i];
            let tol = if adagrad {
                let denom = want_h[r].sqrt();
                f64::from(lr) * (4.0 * acc_err + 1e-5 * dense[i].abs()) / denom
                    + 1e-5 * f64::from(lr) * dense_abs[i]
            } else {
                f64::from(lr) * (acc_err + 2.0 * EPS32 * dense[i].abs())
            } + 2.0 * EPS32 * (w.abs() + f64::from(lr) * dense_abs[i]);
            prop_assert!((f64::from(got) - w).abs() <= tol, "element {i} (row {r}): {got} vs {w}");
        }
        for (r, (&got, &w)) in portable_h.iter().zip(&want_h).enumerate() {
            prop_assert!((f64::from(got) - w).abs() <= 1e-5 * w, "h[{r}]: {got} vs {w}");
        }
        for isa in isas() {
            for split in [false, true] {
                let (w, h) = run(isa, split);
                prop_assert_eq!(bits(&w), bits(&portable), "{} split {}", isa, split);
                prop_assert_eq!(bits(&h), bits(&portable_h), "{} split {}", isa, split);
            }
        }
    }
}

proptest! {
    #[test]
    fn apply_grouped_matches_apply_on_the_lookups_laid_out_by_row(
        (b, _) in batch_strategy(),
        adagrad in any::<bool>(),
        split in any::<bool>(),
        first in 0usize..3,
    ) {
        // Lookups in position order, grouped by the kernel; `apply` gets the same lookups
        // moved next to each other, row after row in first-occurrence order (this test's own
        // grouping, the reference).
        let nb = b.offsets.len().max(1);
        let dim = b.dim;
        let mut g = Lcg(b.indices.len() as u64 + 5);
        let grad: Vec<f32> = (0..nb * dim).map(|_| g.value()).collect();
        let mut lookups = Vec::new();
        for bag in 0..b.offsets.len() {
            let s = b.offsets[bag] as usize;
            let e = b.offsets.get(bag + 1).map_or(b.indices.len(), |&o| o as usize);
            for j in s..e {
                let scale = b.weights.as_ref().map_or(1.0, |w| w[j]);
                lookups.push(Lookup { row: (b.indices[j] as usize + first) as u32, bag: bag as u32, scale });
            }
        }
        const END: u32 = u32::MAX;
        let mut heads = Vec::new();
        let mut next = vec![END; lookups.len()];
        let mut last: Vec<Option<usize>> = vec![None; b.rows + first];
        for (i, l) in lookups.iter().enumerate() {
            match last[l.row as usize] {
                Some(p) => next[p] = i as u32,
                None => heads.push(i as u32),
            }
            last[l.row as usize] = Some(i);
        }
        let mut laid_out = Vec::new();
        for &h in &heads {
            let mut j = h;
            while j != END {
                laid_out.push(lookups[j as usize]);
                j = next[j as usize];
            }
        }
        prop_assert_eq!(laid_out.len(), lookups.len());
        let (lr, eps) = (0.05f32, 1e-3f32);
        let run = |isa: Isa, grouped: bool| -> (Vec<f32>, Vec<f32>) {
            let k = BagKernel::with_isa(BagKernelDesc { dim, prefetch_distance: 2 }, isa).unwrap();
            let mut w = b.table.clone();
            let mut h = vec![0.25f32; b.rows];
            let grows = GradRows { data: &grad, stride: dim };
            let update = if adagrad {
                RowUpdate::RowwiseAdagrad { lr, eps, state: &mut h }
            } else {
                RowUpdate::Sgd { lr }
            };
            let (mut hi, mut lo) = split_halves(&w);
            let rows = if split {
                RowsMut::Split { hi: &mut hi, lo: &mut lo }
            } else {
                RowsMut::F32(&mut w)
            };
            if grouped {
                let mut buffers = GroupBuffers::default();
                k.apply_grouped(rows, first, &lookups, grows, update, &mut buffers).unwrap();
            } else {
                k.apply(rows, first, &laid_out, grows, update).unwrap();
            }
            if split {
                join_halves(&hi, &lo, &mut w);
            }
            (w, h)
        };
        let (want, want_h) = run(Isa::Portable, false);
        for isa in isas() {
            let (w, h) = run(isa, true);
            prop_assert_eq!(bits(&w), bits(&want), "{}", isa);
            prop_assert_eq!(bits(&h), bits(&want_h), "{}", isa);
        }
    }
}

#[test]
fn apply_grouped_errors_write_nothing() {
    for isa in isas() {
        let k = BagKernel::with_isa(BagKernelDesc::new(3), isa).unwrap();
        let mut w = vec![1.0f32; 4 * 3];
        let mut buffers = GroupBuffers::default();
        let grad = [1.0f32; 6];
        let ok = Lookup {
            row: 5,
            bag: 1,
            scale: 1.0,
        };
        let mut apply = |lookups: &[Lookup], grad: &[f32]| {
            k.apply_grouped(
                RowsMut::F32(&mut w),
                5,
                lookups,
                GradRows {
                    data: grad,
                    stride: 3,
                },
                RowUpdate::Sgd { lr: 1.0 },
                &mut buffers,
            )
            .unwrap_err()
            .to_string()
        };
        // Rows 5..9; the first bad lookup is named, after good ones of the same rows.
        assert_eq!(
            apply(&[ok, ok, Lookup { row: 9, ..ok }], &grad),
            "lookup 2: row 9 outside the block of rows [5, 9)"
        );
        assert_eq!(
            apply(
                &[ok, Lookup { row: 4, ..ok }, Lookup { row: 9, ..ok }],
                &grad
            ),
            "lookup 1: row 4 outside the block of rows [5, 9)"
        );
        assert_eq!(
            apply(&[ok, Lookup { bag: 2, ..ok }], &grad),
            "grad slice too short at batch position 1: needs 9 elements, has 6"
        );
        assert_eq!(
            apply(&[ok], &grad[..2]),
            "grad slice too short at batch position 0: needs 6 elements, has 2"
        );
        assert!(w.iter().all(|&x| x == 1.0), "{isa}: an error wrote");
    }
}

#[test]
fn empty_bags_pool_to_zeros_and_mean_divides() {
    for isa in isas() {
        let k = BagKernel::with_isa(BagKernelDesc::new(17), isa).unwrap();
        let table: Vec<f32> = (0..3 * 17).map(|x| x as f32).collect();
        let (indices, offsets) = ([2i64, 2, 0], [0i64, 0, 2, 3]);
        let bags = Bags {
            indices: &indices,
            offsets: &offsets,
            end: 3,
            weights: None,
        };
        let mut out = vec![f32::NAN; 4 * 17];
        let bags = CheckedBags::new(bags, 3).unwrap();
        k.pool(&table, &bags, Pooling::Mean, &mut out, 17).unwrap();
        assert!(out[..17].iter().all(|&x| x == 0.0), "{isa}");
        assert_eq!(out[17..34], table[34..51], "{isa}: mean of a duplicate");
        assert_eq!(out[34..51], table[..17], "{isa}");
        assert!(
            out[51..].iter().all(|&x| x == 0.0),
            "{isa}: trailing empty bag"
        );
    }
}

#[test]
fn pool_errors_write_nothing() {
    let table = vec![1.0f32; 10 * 4];
    for isa in isas() {
        let k = BagKernel::with_isa(BagKernelDesc::new(4), isa).unwrap();
        let check = |indices: &[i32], offsets: &[i32], end: usize, weights: Option<&[f32]>| {
            let mut out = vec![f32::NAN; 16];
            let bags = Bags {
                indices,
                offsets,
                end,
                weights,
            };
            let err = CheckedBags::new(bags, 10)
                .and_then(|bags| k.pool(&table, &bags, Pooling::Sum, &mut out, 4))
                .unwrap_err();
            assert!(out.iter().all(|x| x.is_nan()), "{isa}: {err} wrote");
            err
        };
        assert_eq!(
            check(&[1, 2, 10], &[0, 1], 3, None),
            BagError::IndexOutOfRange {
                bag: 1,
                position: 2,
                index: 10,
                rows: 10
            }
        );
        assert_eq!(
            check(&[1, -1], &[0, 0, 1], 2, None).to_string(),
            "bag 2, position 1: index -1 outside [0, 10)"
        );
        assert_eq!(
            check(&[1, 2], &[0, 2, 1], 2, None).to_string(),
            "bag 2: bad offsets: offset 1 is smaller than the previous offset 2"
        );
        assert_eq!(
            check(&[1, 2], &[-1], 2, None).to_string(),
            "bag 0: bad offsets: offset -1 is negative"
        );
        assert!(matches!(
            check(&[1, 2], &[0, 3], 2, None),
            BagError::Offsets { bag: 1, .. }
        ));
        assert!(matches!(
            check(&[1, 2], &[0], 3, None),
            BagError::Kernel(KernelError::SliceTooShort {
                operand: "indices",
                ..
            })
        ));
        assert!(matches!(
            check(&[1, 2], &[0], 2, Some(&[1.0])),
            BagError::Kernel(KernelError::LengthMismatch { .. })
        ));
        // Output one element short for 4 bags of stride 4.
        let mut out = vec![f32::NAN; 15];
        let bags = Bags {
            indices: &[0i32],
            offsets: &[0i32, 1, 1, 1],
            end: 1,
            weights: None,
        };
        // Checked for a table of another size: refused before anything is read.
        assert_eq!(
            k.pool(
                &table,
                &CheckedBags::new(bags, 11).unwrap(),
                Pooling::Sum,
                &mut out,
                4
            ),
            Err(BagError::RowsMismatch {
                checked: 11,
                table: 10
            })
        );
        let bags = CheckedBags::new(bags, 10).unwrap();
        assert!(matches!(
            k.pool(&table, &bags, Pooling::Sum, &mut out, 4),
            Err(BagError::Kernel(KernelError::SliceTooShort {
                operand: "out",
                ..
            }))
        ));
        assert!(matches!(
            k.pool(&table, &bags, Pooling::Sum, &mut out, 3),
            Err(BagError::Kernel(KernelError::LeadingDimension { .. }))
        ));
        assert!(out.iter().all(|x| x.is_nan()));
    }
}

#[test]
fn apply_errors_write_nothing() {
    for isa in isas() {
        let k = BagKernel::with_isa(BagKernelDesc::new(3), isa).unwrap();
        let mut w = vec![1.0f32; 4 * 3];
        let grad = [1.0f32; 6];
        let g = GradRows {
            data: &grad,
            stride: 3,
        };
        let ok = Lookup {
            row: 5,
            bag: 1,
            scale: 1.0,
        };
        let outside = Lookup { row: 9, ..ok };
        let err = k
            .apply(
                RowsMut::F32(&mut w),
                5,
                &[ok, outside],
                g,
                RowUpdate::Sgd { lr: 1.0 },
            )
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "lookup 1: row 9 outside the block of rows [5, 9)"
        );
        let bad_bag = Lookup { bag: 2, ..ok };
        assert!(matches!(
            k.apply(
                RowsMut::F32(&mut w),
                5,
                &[ok, bad_bag],
                g,
                RowUpdate::Sgd { lr: 1.0 }
            ),
            Err(BagError::Kernel(KernelError::SliceTooShort {
                operand: "grad",
                batch_index: Some(1),
                ..
            }))
        ));
        let mut h = [0f32; 3];
        assert!(matches!(
            k.apply(
                RowsMut::F32(&mut w),
                5,
                &[ok],
                g,
                RowUpdate::RowwiseAdagrad {
                    lr: 1.0,
                    eps: 0.0,
                    state: &mut h
                }
            ),
            Err(BagError::Kernel(KernelError::SliceTooShort {
                operand: "Adagrad state",
                ..
            }))
        ));
        assert!(w.iter().all(|&x| x == 1.0));
        let (mut hi, mut lo) = (vec![bf16::ONE; 12], vec![0u16; 11]);
        assert!(matches!(
            k.apply(
                RowsMut::Split {
                    hi: &mut hi,
                    lo: &mut lo
                },
                5,
                &[ok],
                g,
                RowUpdate::Sgd { lr: 1.0 }
            ),
            Err(BagError::Kernel(KernelError::LengthMismatch { .. }))
        ));
        assert!(hi.iter().all(|&x| x == bf16::ONE) && lo.iter().all(|&x| x == 0));
    }
}

#[test]
fn zero_dim_is_refused() {
    assert_eq!(
        BagKernel::new(BagKernelDesc::new(0)).unwrap_err(),
        BagError::ZeroDim
    );
}

#[test]
fn huge_page_buffers_are_zeroed_aligned_and_writable() {
    let n = (3 * HUGE_PAGE) / 4 + 123; // 1.5 pages of f32 and a bit
    let mut buf = HugePageBuf::<f32>::zeroed(n).unwrap();
    assert_eq!(buf.len(), n);
    assert_eq!(buf.as_ptr() as usize % HUGE_PAGE, 0);
    assert!(buf.iter().all(|&x| x == 0.0));
    buf[n - 1] = 2.0;
    let copy = buf.clone();
    assert_eq!(copy[n - 1], 2.0);
    assert_eq!(copy.len(), n);
    println!("huge pages advised: {}", buf.huge_pages());
    if cfg!(target_os = "linux")
        && std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
            .is_ok_and(|s| !s.contains("[never]"))
    {
        assert!(buf.huge_pages(), "madvise(MADV_HUGEPAGE) was refused");
    }
    let small = HugePageBuf::<u16>::zeroed(5).unwrap();
    assert!(!small.huge_pages());
    assert_eq!(small.as_ptr() as usize % 64, 0);
    let empty = HugePageBuf::<bf16>::zeroed(0).unwrap();
    assert!(empty.is_empty());
    assert!(matches!(
        HugePageBuf::<f32>::zeroed(usize::MAX / 2),
        Err(KernelError::Overflow { .. })
    ));
}
