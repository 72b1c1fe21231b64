//! BRGEMM against one plain f64 reference, on every ISA this machine has.

use dlrm_microkernels::tuning::{Bf16Gemm, Overrides};
use dlrm_microkernels::{
    ALayout, Accum, Batch, BatchKind, Brgemm, BrgemmDesc, DType, Isa, KernelError, RegisterTile,
    bf16, vnni,
};
use proptest::prelude::*;

/// Value placed after and between the rows of C: must survive every run.
const SENTINEL: f32 = -1536.0; // exact in bf16 too

/// A dimension: the edge sizes the issue names, or anything in 1..=70.
fn dim() -> impl Strategy<Value = usize> {
    prop_oneof![
        3 => prop::sample::select(vec![1usize, 15, 16, 17, 33, 64]),
        2 => 1usize..=70,
    ]
}

#[derive(Debug, Clone)]
struct Case {
    m: usize,
    n: usize,
    k: usize,
    count: usize,
    pad_a: usize,
    pad_b: usize,
    pad_c: usize,
    kind: u8,
    types: (DType, DType),
    accum: Accum,
    trans_a: bool,
    /// Small integer values, whose sums every path computes exactly: then every backend and
    /// bf16 path (tiles included) must give the same bits.
    ints: bool,
    seed: u64,
}

fn case() -> impl Strategy<Value = Case> {
    (
        (dim(), dim(), dim(), 0usize..=5),
        (0usize..=3, 0usize..=3, 0usize..=3),
        0u8..3,
        prop::sample::select(vec![
            (DType::F32, DType::F32),
            (DType::Bf16, DType::F32),
            (DType::Bf16, DType::Bf16),
        ]),
        prop::bool::ANY,
        (prop::bool::ANY, prop::bool::weighted(0.3)),
        any::<u64>(),
    )
        .prop_map(
            |((m, n, k, count), (pad_a, pad_b, pad_c), kind, types, acc, (trans, ints), seed)| {
                Case {
                    m,
                    n,
                    k,
                    count,
                    pad_a,
                    pad_b,
                    pad_c,
                    kind,
                    types,
                    accum: if acc {
                        Accum::Accumulate
                    } else {
                        Accum::Replace
                    },
                    // A transposed is an f32-only layout.
                    trans_a: trans && types.0 == DType::F32,
                    ints,
                    seed,
                }
            },
        )
}

/// A small deterministic generator (xorshift), values in [-1, 1).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

/// Operands of one case as plain row-major f32 matrices (bf16-representable when the input
/// type is bf16), laid out as the descriptor describes.
struct Operands {
    desc: BrgemmDesc,
    /// A_i row-major at a_starts[i] in `a` (with lda).
    a: Vec<f32>,
    /// B_i row-major (ldb) at b_starts_rm[i] in `b_rm`: the reference's view.
    b_rm: Vec<f32>,
    /// B as the kernel wants it (row-major f32, or VNNI-2 of the same values).
    b_kernel: Vec<f32>,
    a_starts: Vec<usize>,
    b_starts_rm: Vec<usize>,
    b_starts: Vec<usize>,
    c0: Vec<f32>,
}

fn build(case: &Case) -> Operands {
    let Case { m, n, k, count, .. } = *case;
    let lda = if case.trans_a { m } else { k } + case.pad_a;
    let (ldb, ldc) = (n + case.pad_b, n + case.pad_c);
    // Position of A(r, kk) inside one A_i.
    let a_at = |r: usize, kk: usize| {
        if case.trans_a {
            kk * lda + r
        } else {
            r * lda + kk
        }
    };
    let bf = case.types.0 == DType::Bf16;
    let mut rng = Rng(case.seed | 1);
    let ints = case.ints;
    let val = |rng: &mut Rng| {
        let v = if ints {
            (rng.next() * 4.5).round()
        } else {
            rng.next()
        };
        if bf { bf16::from_f32(v).to_f32() } else { v }
    };
    let a_ext = if k == 0 { 0 } else { a_at(m - 1, k - 1) + 1 };
    let b_ext_rm = (k.max(1) - 1) * ldb + n;
    let b_ext = if bf {
        (k.div_ceil(2).max(1) - 1) * 2 * ldb + 2 * n
    } else {
        b_ext_rm
    };
    // Pairs placed with a gap between them, in reverse order for offsets, so offsets matter.
    let (stride_a, stride_b) = (a_ext + 3, b_ext + 5);
    let stride_b_rm = b_ext_rm + 5;
    let order: Vec<usize> = match case.kind {
        1 => (0..count).rev().collect(),
        _ => (0..count).collect(),
    };
    let a_starts: Vec<usize> = order.iter().map(|&p| p * stride_a).collect();
    let b_starts: Vec<usize> = order.iter().map(|&p| p * stride_b).collect();
    let b_starts_rm: Vec<usize> = order.iter().map(|&p| p * stride_b_rm).collect();
    let mut a = vec![f32::NAN; count * stride_a + 1];
    let mut b_rm = vec![f32::NAN; count * stride_b_rm + 1];
    let mut b_kernel = vec![f32::NAN; count * stride_b + 1];
    for i in 0..count {
        for r in 0..m {
            for kk in 0..k {
                a[a_starts[i] + a_at(r, kk)] = val(&mut rng);
            }
        }
        for kk in 0..k {
            for j in 0..n {
                let v = val(&mut rng);
                b_rm[b_starts_rm[i] + kk * ldb + j] = v;
                let at = if bf {
                    vnni::index(kk, j, ldb)
                } else {
                    kk * ldb + j
                };
                b_kernel[b_starts[i] + at] = v;
            }
        }
    }
    let c_ext = (m - 1) * ldc + n;
    let out_bf = case.types.1 == DType::Bf16;
    let c0 = (0..c_ext + 8)
        .map(|idx| {
            let (r, j) = (idx / ldc, idx % ldc);
            if r >= m || j >= n || idx >= c_ext {
                SENTINEL
            } else if case.accum == Accum::Replace {
                f32::NAN
            } else {
                let v = if ints {
                    (rng.next() * 4.5).round()
                } else {
                    rng.next()
                };
                if out_bf {
                    bf16::from_f32(v).to_f32()
                } else {
                    v
                }
            }
        })
        .collect();
    let batch = match case.kind {
        0 => BatchKind::Strided { stride_a, stride_b },
        1 => BatchKind::Offsets,
        _ => BatchKind::Slices,
    };
    let desc = BrgemmDesc {
        m,
        n,
        k,
        lda,
        ldb,
        ldc,
        input: case.types.0,
        output: case.types.1,
        a_layout: if case.trans_a {
            ALayout::Transposed
        } else {
            ALayout::RowMajor
        },
        batch,
        accum: case.accum,
    };
    Operands {
        desc,
        a,
        b_rm,
        b_kernel,
        a_starts,
        b_starts_rm,
        b_starts,
        c0,
    }
}

/// The f64 reference and, per element, the sum of |terms| (for the error bound).
fn reference(o: &Operands) -> (Vec<f64>, Vec<f64>) {
    let d = &o.desc;
    let mut c = vec![0f64; o.c0.len()];
    let mut mag = vec![0f64; o.c0.len()];
    for r in 0..d.m {
        for j in 0..d.n {
            let at = r * d.ldc + j;
            let (mut s, mut t) = if d.accum == Accum::Accumulate {
                (o.c0[at] as f64, (o.c0[at] as f64).abs())
            } else {
                (0.0, 0.0)
            };
            for (&sa, &sb) in o.a_starts.iter().zip(&o.b_starts_rm) {
                for kk in 0..d.k {
                    let at = match d.a_layout {
                        ALayout::RowMajor => r * d.lda + kk,
                        ALayout::Transposed => kk * d.lda + r,
                    };
                    let p = o.a[sa + at] as f64 * o.b_rm[sb + kk * d.ldb + j] as f64;
                    s += p;
                    t += p.abs();
                }
            }
            c[at] = s;
            mag[at] = t;
        }
    }
    (c, mag)
}

/// Run the kernel on the case's operands, converting to the element types it wants.
fn run_kernel(kernel: &Brgemm, o: &Operands) -> Result<Vec<f32>, KernelError> {
    fn go<I: dlrm_microkernels::Element, O: dlrm_microkernels::Element>(
        kernel: &Brgemm,
        o: &Operands,
    ) -> Result<Vec<f32>, KernelError> {
        let a: Vec<I> = o.a.iter().map(|&x| I::from_f32(x)).collect();
        let b: Vec<I> = o.b_kernel.iter().map(|&x| I::from_f32(x)).collect();
        let mut c: Vec<O> = o.c0.iter().map(|&x| O::from_f32(x)).collect();
        let (m, k) = (o.desc.m, o.desc.k);
        let a_ext = match (k, o.desc.a_layout) {
            (0, _) => 0,
            (_, ALayout::RowMajor) => (m - 1) * o.desc.lda + k,
            (_, ALayout::Transposed) => (k - 1) * o.desc.lda + m,
        };
        let b_ext = o.b_kernel.len() / (o.b_starts.len().max(1));
        let a_sl: Vec<&[I]> = o.a_starts.iter().map(|&s| &a[s..s + a_ext]).collect();
        let b_sl: Vec<&[I]> = o
            .b_starts
            .iter()
            .map(|&s| &b[s..(s + b_ext).min(b.len())])
            .collect();
        let batch = match o.desc.batch {
            BatchKind::Strided { .. } => Batch::strided(&a, &b, o.a_starts.len()),
            BatchKind::Offsets => Batch::offsets(&a, &b, &o.a_starts, &o.b_starts),
            BatchKind::Slices => Batch::slices(&a_sl, &b_sl),
        };
        kernel.run(batch, &mut c)?;
        Ok(c.iter().map(|x| x.to_f32()).collect())
    }
    match (o.desc.input, o.desc.output) {
        (DType::F32, _) => go::<f32, f32>(kernel, o),
        (DType::Bf16, DType::F32) => go::<bf16, f32>(kernel, o),
        (DType::Bf16, DType::Bf16) => go::<bf16, bf16>(kernel, o),
    }
}

fn check_case(case: &Case) -> Result<(), TestCaseError> {
    let o = build(case);
    let (want, mag) = reference(&o);
    let d = &o.desc;
    // Rounding: f32 accumulation over k * count (+1) terms; bf16 output adds one rounding.
    let terms = (d.k * o.a_starts.len() + 2) as f64;
    let portable = run_kernel(&Brgemm::with_isa(*d, Isa::Portable).unwrap(), &o)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    // Equal values (the sign of an exact zero may differ: tiles add the zero products of
    // their padding).
    let exact = |got: &[f32], what: &str| -> Result<(), TestCaseError> {
        if case.ints {
            let same = got.iter().zip(&portable).all(|(x, y)| x == y);
            prop_assert!(same, "{} {:?}: exact sums differ from portable's", what, d);
        }
        Ok(())
    };
    for isa in Isa::ALL {
        if !isa.is_available() {
            eprintln!("skip: ISA {isa} is not available on this CPU");
            continue;
        }
        let kernel = Brgemm::with_isa(*d, isa).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let got = run_kernel(&kernel, &o).map_err(|e| TestCaseError::fail(e.to_string()))?;
        // Every register tile gives the same bits; every bf16 path meets the same bound.
        for overrides in overrides_to_try() {
            let Ok(k) = Brgemm::with_overrides(*d, isa, overrides) else {
                continue;
            };
            let alt = run_kernel(&k, &o).map_err(|e| TestCaseError::fail(e.to_string()))?;
            exact(&alt, &format!("{isa} {overrides:?}"))?;
            if overrides.bf16_gemm.is_none() || d.input == DType::F32 {
                let same = alt
                    .iter()
                    .zip(&got)
                    .all(|(x, y)| x.to_bits() == y.to_bits());
                prop_assert!(
                    same,
                    "{} {:?}: tile {:?} changed a result",
                    isa,
                    d,
                    overrides
                );
            } else {
                check_within(&alt, &o, &want, &mag, terms, isa, &format!("{overrides:?}"))?;
            }
        }
        check_within(&got, &o, &want, &mag, terms, isa, "default")?;
        exact(&got, isa.name())?;
    }
    Ok(())
}

/// Tiles and bf16 paths besides the CPU table's choice (zmm-sized tiles, and ymm-sized
/// ones that fit AVX2's 16 registers; a backend refuses those larger than its own).
fn overrides_to_try() -> Vec<Overrides> {
    let tiles = [
        (1, 1),
        (4, 2),
        (6, 2),
        (4, 3),
        (2, 4),
        (12, 1),
        (5, 4),
        (6, 4),
        (8, 3),
        (9, 3),
        (12, 2),
        (14, 2),
        (14, 1),
    ];
    let mut v: Vec<Overrides> = tiles
        .iter()
        .flat_map(|&(rows, cols)| {
            [false, true].map(|outer| Overrides {
                tile: Some(RegisterTile { rows, cols }),
                pair_outer: Some(outer),
                bf16_gemm: None,
            })
        })
        .collect();
    for path in [
        Bf16Gemm::Dot,
        Bf16Gemm::Widen,
        Bf16Gemm::Tiles,
        Bf16Gemm::TilesModel,
    ] {
        v.push(Overrides {
            bf16_gemm: Some(path),
            ..Overrides::default()
        });
    }
    v
}

/// `got` against the f64 reference within the f32 accumulation bound (plus one bf16
/// rounding for bf16 output), sentinels untouched.
fn check_within(
    got: &[f32],
    o: &Operands,
    want: &[f64],
    mag: &[f64],
    terms: f64,
    isa: Isa,
    what: &str,
) -> Result<(), TestCaseError> {
    let d = &o.desc;
    let u32_ = f32::EPSILON as f64 / 2.0;
    let u_bf16 = 2f64.powi(-8);
    for (idx, (&g, &c0)) in got.iter().zip(&o.c0).enumerate() {
        if c0 == SENTINEL {
            prop_assert_eq!(
                g,
                SENTINEL,
                "{} {}: sentinel at {} overwritten",
                isa,
                what,
                idx
            );
            continue;
        }
        let tol = terms * u32_ * mag[idx]
            + if d.output == DType::Bf16 {
                u_bf16 * want[idx].abs()
            } else {
                0.0
            }
            + 1e-30;
        prop_assert!(
            (g as f64 - want[idx]).abs() <= tol,
            "{} {} {:?}: C[{}] = {} but reference {} (tol {})",
            isa,
            what,
            d,
            idx,
            g,
            want[idx],
            tol
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn brgemm_matches_f64_reference(case in case()) {
        check_case(&case)?;
    }
}

/// bf16 kernels against the f32 values they were rounded from: the error bound is the bf16
/// epsilon (input rounding) plus f32 accumulation over k.
#[test]
fn bf16_within_bf16_epsilon_of_f32_inputs() {
    let (m, n, k, count) = (33, 70, 65, 3);
    let mut rng = Rng(7);
    let a32: Vec<f32> = (0..m * k * count).map(|_| rng.next()).collect();
    let b32: Vec<f32> = (0..k * n * count).map(|_| rng.next()).collect();
    let a16: Vec<bf16> = a32.iter().map(|&x| bf16::from_f32(x)).collect();
    let mut b16 = vec![bf16::ZERO; vnni::packed_len(k, n) * count];
    for i in 0..count {
        let rows: Vec<bf16> = b32[i * k * n..(i + 1) * k * n]
            .iter()
            .map(|&x| bf16::from_f32(x))
            .collect();
        let pl = vnni::packed_len(k, n);
        vnni::pack(&rows, k, n, n, &mut b16[i * pl..(i + 1) * pl], n).unwrap();
    }
    let eps_bf16 = 2f64.powi(-7);
    for isa in Isa::available() {
        let kernel = Brgemm::with_isa(BrgemmDesc::bf16(m, n, k), isa).unwrap();
        let mut c = vec![f32::NAN; m * n];
        kernel
            .run(Batch::strided(&a16, &b16, count), &mut c)
            .unwrap();
        for r in 0..m {
            for j in 0..n {
                let (mut s, mut t) = (0f64, 0f64);
                for i in 0..count {
                    for kk in 0..k {
                        let p =
                            a32[i * m * k + r * k + kk] as f64 * b32[i * k * n + kk * n + j] as f64;
                        s += p;
                        t += p.abs();
                    }
                }
                let tol = (eps_bf16 + (k * count) as f64 * f32::EPSILON as f64) * t;
                let got = c[r * n + j] as f64;
                assert!(
                    (got - s).abs() <= tol,
                    "{isa}: ({r},{j}) {got} vs {s} (tol {tol})"
                );
            }
        }
    }
}

/// The portable bf16 kernel and the widened ones of the SIMD backends (AVX2, AVX-512) agree
/// bit for bit (exact products, same accumulation order).
#[test]
fn bf16_paths_agree() {
    let o = build(&Case {
        m: 17,
        n: 33,
        k: 15,
        count: 4,
        pad_a: 1,
        pad_b: 2,
        pad_c: 3,
        kind: 0,
        types: (DType::Bf16, DType::F32),
        accum: Accum::Replace,
        trans_a: false,
        ints: false,
        seed: 99,
    });
    let portable = run_kernel(&Brgemm::with_isa(o.desc, Isa::Portable).unwrap(), &o).unwrap();
    for isa in [Isa::Avx2, Isa::Avx512] {
        if !isa.is_available() {
            eprintln!("skip: ISA {isa} is not available on this CPU");
            continue;
        }
        let widen = Overrides {
            bf16_gemm: Some(Bf16Gemm::Widen),
            ..Overrides::default()
        };
        let kernel = Brgemm::with_overrides(o.desc, isa, widen).unwrap();
        let got = run_kernel(&kernel, &o).unwrap();
        for (p, a) in portable.iter().zip(&got) {
            assert_eq!(p.to_bits(), a.to_bits(), "{isa}");
        }
    }
}

#[test]
fn count_zero_replace_writes_zeros_and_accumulate_keeps() {
    for isa in Isa::available() {
        let mut desc = BrgemmDesc::f32(3, 5, 4);
        desc.ldc = 6;
        let k = Brgemm::with_isa(desc, isa).unwrap();
        let mut c = vec![f32::NAN; 3 * 6];
        k.run(Batch::strided(&[] as &[f32], &[], 0), &mut c)
            .unwrap();
        for (i, x) in c.iter().enumerate() {
            if i % 6 < 5 {
                assert_eq!(*x, 0.0, "{isa}");
            } else {
                assert!(x.is_nan(), "{isa}: padding column written");
            }
        }
        desc.accum = Accum::Accumulate;
        let k = Brgemm::with_isa(desc, isa).unwrap();
        let mut c = vec![2.5f32; 3 * 6];
        k.run(Batch::strided(&[] as &[f32], &[], 0), &mut c)
            .unwrap();
        assert!(c.iter().all(|&x| x == 2.5));
    }
}

#[test]
fn odd_k_ignores_garbage_in_vnni_padding() {
    // k = 3: the second half of the last pair is padding; put NaN there.
    let (m, n, k) = (2, 3, 3);
    let a: Vec<bf16> = (0..m * k).map(|i| bf16::from_f32(i as f32)).collect();
    let rows: Vec<bf16> = (0..k * n).map(|i| bf16::from_f32(1.0 + i as f32)).collect();
    let mut b = vec![bf16::ZERO; vnni::packed_len(k, n)];
    vnni::pack(&rows, k, n, n, &mut b, n).unwrap();
    for j in 0..n {
        b[vnni::index(3, j, n)] = bf16::NAN;
    }
    for isa in Isa::available() {
        let kernel = Brgemm::with_isa(BrgemmDesc::bf16(m, n, k), isa).unwrap();
        let mut c = vec![0.0f32; m * n];
        kernel.run(Batch::strided(&a, &b, 1), &mut c).unwrap();
        assert!(c.iter().all(|x| x.is_finite()), "{isa}: {c:?}");
        assert_eq!(c[0], 0.0 * 1.0 + 1.0 * 4.0 + 2.0 * 7.0, "{isa}");
    }
}

#[test]
fn bf16_output_rounds_to_nearest_even() {
    // 1 + 2^-8 lies exactly between bf16 1.0 and 1.0078125: ties go to even (1.0);
    // 1 + 3 * 2^-8 lies between 1.0078125 and 1.015625: ties go to even (1.015625).
    let a = [bf16::ONE, bf16::ONE];
    let tiny = bf16::from_f32(1.0 / 256.0);
    let threes = bf16::from_f32(3.0 / 256.0);
    for isa in Isa::available() {
        let mut desc = BrgemmDesc::bf16(1, 2, 2);
        desc.output = DType::Bf16;
        let kernel = Brgemm::with_isa(desc, isa).unwrap();
        // B rows: [1, 1] and [tiny, threes] -> c = [1 + tiny, 1 + threes].
        let rows = [bf16::ONE, bf16::ONE, tiny, threes];
        let mut b = vec![bf16::ZERO; vnni::packed_len(2, 2)];
        vnni::pack(&rows, 2, 2, 2, &mut b, 2).unwrap();
        let mut c = [bf16::NAN; 2];
        kernel.run(Batch::strided(&a, &b, 1), &mut c).unwrap();
        assert_eq!(c.map(|x| x.to_f32()), [1.0, 1.015625], "{isa}");
    }
}

fn f32_kernel(desc: BrgemmDesc) -> Brgemm {
    Brgemm::new(desc).unwrap()
}

#[test]
fn errors_name_what_and_where_and_leave_c_untouched() {
    let k = f32_kernel(BrgemmDesc::f32(4, 4, 4));
    let a = vec![1.0f32; 32];
    let mut c = vec![7.0f32; 16];

    // A too short for the second pair.
    let err = k.run(Batch::strided(&a[..20], &a, 2), &mut c).unwrap_err();
    assert_eq!(
        err,
        KernelError::SliceTooShort {
            operand: "A",
            batch_index: Some(1),
            needed: 32,
            len: 20
        }
    );
    assert!(c.iter().all(|&x| x == 7.0));

    // B too short.
    let err = k.run(Batch::strided(&a, &a[..31], 2), &mut c).unwrap_err();
    assert!(matches!(
        err,
        KernelError::SliceTooShort { operand: "B", .. }
    ));

    // C too short.
    let err = k.run(Batch::strided(&a, &a, 1), &mut c[..15]).unwrap_err();
    assert!(matches!(
        err,
        KernelError::SliceTooShort { operand: "C", .. }
    ));

    // Offsets: the bad position is named.
    let mut d = BrgemmDesc::f32(4, 4, 4);
    d.batch = BatchKind::Offsets;
    let ko = f32_kernel(d);
    let err = ko
        .run(Batch::offsets(&a, &a, &[0, 8, 17], &[0, 0, 0]), &mut c)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "A slice too short at batch position 2: needs 33 elements, has 32"
    );
    let err = ko
        .run(Batch::offsets(&a, &a, &[0, 8], &[0]), &mut c)
        .unwrap_err();
    assert!(matches!(err, KernelError::LengthMismatch { .. }));

    // Slices: a short one.
    let mut d = BrgemmDesc::f32(4, 4, 4);
    d.batch = BatchKind::Slices;
    let ks = f32_kernel(d);
    let err = ks
        .run(
            Batch::slices(&[&a[..16], &a[..15]], &[&a[..16], &a[..16]]),
            &mut c,
        )
        .unwrap_err();
    assert!(matches!(
        err,
        KernelError::SliceTooShort {
            operand: "A",
            batch_index: Some(1),
            ..
        }
    ));

    // Kind and type mismatches.
    let err = k
        .run(Batch::offsets(&a, &a, &[0], &[0]), &mut c)
        .unwrap_err();
    assert!(matches!(err, KernelError::BatchKindMismatch { .. }));
    let a16 = vec![bf16::ONE; 32];
    let err = k.run(Batch::strided(&a16, &a16, 1), &mut c).unwrap_err();
    assert_eq!(
        err.to_string(),
        "A/B has type bf16 but the descriptor says f32"
    );
    let mut c16 = vec![bf16::ONE; 16];
    let err = k.run(Batch::strided(&a, &a, 1), &mut c16).unwrap_err();
    assert!(matches!(
        err,
        KernelError::TypeMismatch { operand: "C", .. }
    ));
    assert!(c.iter().all(|&x| x == 7.0));
}

#[test]
fn impossible_descriptors_are_refused() {
    let mut d = BrgemmDesc::f32(4, 8, 4);
    d.ldb = 7;
    assert_eq!(
        Brgemm::new(d).unwrap_err().to_string(),
        "ldb = 7 is smaller than n = 8"
    );
    let mut d = BrgemmDesc::f32(4, 8, 4);
    d.ldc = 2;
    assert!(matches!(
        Brgemm::new(d),
        Err(KernelError::LeadingDimension { name: "ldc", .. })
    ));
    let mut d = BrgemmDesc::f32(4, 8, 4);
    d.output = DType::Bf16;
    assert!(matches!(
        Brgemm::new(d),
        Err(KernelError::UnsupportedTypes { .. })
    ));
    let mut d = BrgemmDesc::f32(usize::MAX / 2, 8, 4);
    d.lda = 8;
    assert!(matches!(Brgemm::new(d), Err(KernelError::Overflow { .. })));
}

#[test]
fn unavailable_isa_is_an_error_naming_the_best() {
    let best = Isa::best();
    match Isa::ALL.into_iter().find(|i| !i.is_available()) {
        Some(missing) => {
            let err = Brgemm::with_isa(BrgemmDesc::f32(1, 1, 1), missing).unwrap_err();
            assert_eq!(
                err,
                KernelError::IsaUnavailable {
                    requested: missing,
                    missing: dlrm_microkernels::cpu::Cpu::get()
                        .features
                        .missing(missing.needs()),
                    best
                }
            );
        }
        None => eprintln!("skip: this CPU has every ISA; checking the rule through isa::resolve"),
    }
    let features = dlrm_microkernels::cpu::Features::AVX2;
    let err = dlrm_microkernels::isa::resolve(Some("avx512bf16"), features).unwrap_err();
    assert_eq!(
        err.to_string(),
        "ISA avx512bf16 is not available on this CPU (it lacks avx512f avx512bw avx512vl \
         avx512dq avx512bf16; best available: portable)"
    );
}

/// `run_with` gives, bit for bit, what `run` into f32 followed by the epilogue's steps in
/// scalar code gives, on every ISA, type pair and accumulation mode, with NaN, zeros of both
/// signs and negatives in C and in the mask.
#[test]
fn epilogue_equals_plain_run_then_scalar_steps_on_every_isa() {
    use dlrm_microkernels::{Element, Epilogue};
    let (m, n, k, count) = (13, 37, 9, 3);
    let ldc = n + 2;
    let mut rng = Rng(99);
    let a32: Vec<f32> = (0..m * k * count).map(|_| rng.next()).collect();
    let b_rows: Vec<f32> = (0..k * n * count).map(|_| rng.next()).collect();
    let mut c0: Vec<f32> = (0..m * ldc).map(|_| rng.next()).collect();
    c0[5] = f32::NAN;
    c0[ldc + 3] = -0.0;
    let bias: Vec<f32> = (0..n)
        .map(|j| if j % 5 == 0 { 0.0 } else { rng.next() })
        .collect();
    let specials = [0.0, -0.0, -1.0, f32::NAN, 2.0, 1e-30];
    let mask32: Vec<f32> = (0..m * ldc).map(|i| specials[i % 6]).collect();

    /// A, B's rows, C's start, the bias and the mask, as f32.
    struct Data<'a> {
        a32: &'a [f32],
        b_rows: &'a [f32],
        c0: &'a [f32],
        bias: &'a [f32],
        mask32: &'a [f32],
    }
    fn go<I: Element, O: Element>(
        isa: Isa,
        accum: Accum,
        d: &Data<'_>,
        (m, n, k, count, ldc): (usize, usize, usize, usize, usize),
    ) {
        let Data {
            a32,
            b_rows,
            c0,
            bias,
            mask32,
        } = *d;
        let bf = I::DTYPE == DType::Bf16;
        let a: Vec<I> = a32.iter().map(|&x| I::from_f32(x)).collect();
        // B_i row-major (f32) or VNNI-2 (bf16), back to back.
        let b_len = if bf { vnni::packed_len(k, n) } else { k * n };
        let mut b = vec![I::from_f32(0.0); b_len * count];
        for i in 0..count {
            let rows: Vec<I> = b_rows[i * k * n..][..k * n]
                .iter()
                .map(|&x| I::from_f32(x))
                .collect();
            if bf {
                let mut packed = vec![bf16::ZERO; b_len];
                let rows16: Vec<bf16> = rows.iter().map(|x| bf16::from_f32(x.to_f32())).collect();
                vnni::pack(&rows16, k, n, n, &mut packed, n).unwrap();
                for (d, s) in b[i * b_len..][..b_len].iter_mut().zip(packed) {
                    *d = I::from_f32(s.to_f32());
                }
            } else {
                b[i * b_len..][..b_len].copy_from_slice(&rows);
            }
        }
        let desc = |output| BrgemmDesc {
            input: I::DTYPE,
            output,
            ldc,
            accum,
            batch: BatchKind::Strided {
                stride_a: m * k,
                stride_b: b_len,
            },
            ..if bf {
                BrgemmDesc::bf16(m, n, k)
            } else {
                BrgemmDesc::f32(m, n, k)
            }
        };
        let batch = Batch::strided(&a, &b, count);
        // The plain reduction, in f32 (C's start rounded to O first, as the fused run sees it).
        let start: Vec<O> = c0.iter().map(|&x| O::from_f32(x)).collect();
        let mut plain: Vec<f32> = start.iter().map(|x| x.to_f32()).collect();
        Brgemm::with_isa(desc(DType::F32), isa)
            .unwrap()
            .run(batch, &mut plain)
            .unwrap();
        let mask: Vec<O> = mask32.iter().map(|&x| O::from_f32(x)).collect();
        let fused_kernel = Brgemm::with_isa(desc(O::DTYPE), isa).unwrap();
        let variants = [
            Epilogue {
                bias: Some(bias),
                ..Epilogue::none()
            },
            Epilogue {
                bias: Some(bias),
                relu: true,
                ..Epilogue::none()
            },
            Epilogue {
                relu_mask: Some(&mask[..]),
                ..Epilogue::none()
            },
            Epilogue {
                relu: true,
                valid_rows: 7,
                valid_cols: 20,
                ..Epilogue::none()
            },
            Epilogue {
                bias: Some(bias),
                relu: true,
                relu_mask: Some(&mask[..]),
                valid_rows: 12,
                valid_cols: 33,
            },
        ];
        for (vi, epi) in variants.into_iter().enumerate() {
            let mut got = start.clone();
            fused_kernel.run_with(batch, &mut got, epi).unwrap();
            for r in 0..m {
                for j in 0..ldc {
                    let at = r * ldc + j;
                    let want = if j >= n {
                        start[at].to_f32() // outside C's n columns: untouched
                    } else {
                        let mut v = plain[at];
                        if let Some(b) = epi.bias {
                            v += b[j];
                        }
                        if epi.relu && v <= 0.0 {
                            v = 0.0;
                        }
                        let positive = mask[at].to_f32() > 0.0;
                        if epi.relu_mask.is_some() && !positive {
                            v = 0.0;
                        }
                        if r >= epi.valid_rows || j >= epi.valid_cols {
                            v = 0.0;
                        }
                        O::from_f32(v).to_f32()
                    };
                    let g = got[at].to_f32();
                    assert!(
                        g.to_bits() == want.to_bits() || (g.is_nan() && want.is_nan()),
                        "{isa} {:?}->{:?} {accum:?} variant {vi}: C[{r}][{j}] = {g:e}, want {want:e}",
                        I::DTYPE,
                        O::DTYPE
                    );
                }
            }
        }
    }
    for isa in Isa::available() {
        for accum in [Accum::Replace, Accum::Accumulate] {
            let data = Data {
                a32: &a32,
                b_rows: &b_rows,
                c0: &c0,
                bias: &bias,
                mask32: &mask32,
            };
            let dims = (m, n, k, count, ldc);
            go::<f32, f32>(isa, accum, &data, dims);
            go::<bf16, f32>(isa, accum, &data, dims);
            go::<bf16, bf16>(isa, accum, &data, dims);
        }
    }
}

#[test]
fn epilogue_operands_too_short_are_reported_and_c_is_untouched() {
    use dlrm_microkernels::Epilogue;
    let k = Brgemm::new(BrgemmDesc::f32(2, 3, 1)).unwrap();
    let (a, b) = ([1.0f32; 2], [1.0f32; 3]);
    let mut c = [7.0f32; 6];
    let y = [1.0f32; 5];
    let cases = [
        (
            Epilogue {
                bias: Some(&[0.0, 0.0][..]),
                ..Epilogue::none()
            },
            "bias slice too short: needs 3 elements, has 2",
        ),
        (
            Epilogue {
                relu_mask: Some(&y[..]),
                ..Epilogue::none()
            },
            "relu_mask slice too short: needs 6 elements, has 5",
        ),
    ];
    for (epilogue, message) in cases {
        let err = k
            .run_with(Batch::strided(&a, &b, 1), &mut c, epilogue)
            .unwrap_err();
        assert_eq!(err.to_string(), message);
    }
    assert_eq!(c, [7.0; 6]);
}
