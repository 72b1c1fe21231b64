//! Batch-reduce GEMM: describe once, get a kernel, run it many times.
//!
//! `C[m x n] (= or +=) sum_{i < count} A_i[m x k] * B_i[k x n]`, every matrix row-major with a
//! leading dimension (the distance, in elements, between the starts of consecutive rows).
//!
//! * **f32**: A, B and C are `f32`; B is plain row-major, element `(kk, j)` at
//!   `kk * ldb + j`.
//! * **bf16**: A and B are `half::bf16` and products accumulate in f32; C is `f32`, or `bf16`
//!   rounded to nearest even when stored. B is in **VNNI-2** layout `[ceil(k/2)][ldb][2]`:
//!   element `(kk, j)` at `(kk / 2) * 2 * ldb + 2 * j + kk % 2`, so one 32-bit lane holds the
//!   pair of consecutive k that `vdpbf16ps` consumes. For odd `k` the second half of the last
//!   pair is padding (its value is never used). [`crate::vnni`] packs and unpacks it. Every ISA
//!   uses this layout for bf16, so packed data does not depend on the CPU.
//!
//! The batch of (A_i, B_i) pairs is given as base slices plus fixed strides
//! ([`BatchKind::Strided`]), base slices plus per-pair offsets ([`BatchKind::Offsets`]), or an
//! explicit list of slices ([`BatchKind::Slices`]). With `count == 0`, [`Accum::Replace`]
//! writes zeros and [`Accum::Accumulate`] leaves C as it was. [`Brgemm::run_with`] takes an
//! [`Epilogue`] applied to each value before it is stored.
//!
//! ```
//! use dlrm_microkernels::{Accum, Batch, Brgemm, BrgemmDesc};
//!
//! // C[2x3] = A_0 B_0 + A_1 B_1 with A_i 2x2 and B_i 2x3, stored back to back.
//! let desc = BrgemmDesc::f32(2, 3, 2); // tight strides, Accum::Replace
//! let kernel = Brgemm::new(desc)?;
//! let a = [1.0, 0.0, 0.0, 1.0, /* A_1 */ 2.0, 0.0, 0.0, 2.0];
//! let b = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, /* B_1 */ 1.0, 1.0, 1.0, 1.0, 1.0, 1.0];
//! let mut c = [f32::NAN; 6];
//! kernel.run(Batch::strided(&a, &b, 2), &mut c)?;
//! assert_eq!(c, [3.0, 4.0, 5.0, 6.0, 7.0, 8.0]);
//! # Ok::<(), dlrm_microkernels::KernelError>(())
//! ```

use crate::abi::{BatchPtrs, Bf16Brgemm, BrgemmFn, EpiPtrs, Params};
use crate::error::fits;
use crate::tuning::{Bf16Gemm, Overrides, Tuning};
use crate::{DType, Element, Isa, KernelError, RegisterTile, backend};

/// Whether a kernel overwrites C or adds to it (instead of a `beta` float).
///
/// ```
/// use dlrm_microkernels::Accum;
/// assert_ne!(Accum::Replace, Accum::Accumulate);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Accum {
    /// `C = sum`: C's previous contents are never read (NaN in C is harmless).
    #[default]
    Replace,
    /// `C += sum`.
    Accumulate,
}

/// What [`Brgemm::run_with`] does to each value of C between the batch reduction and the
/// store, so that a layer's output is written once, straight from the registers (the forward
/// and backward-data epilogues of a linear layer). The steps, for element `(r, j)`, in order:
///
/// 1. `v += bias[j]`, with a bias;
/// 2. `v = if v <= 0 { 0 } else { v }` with `relu` (NaN is kept, as in PyTorch);
/// 3. `v = if mask[r * ldc + j] > 0 { v } else { 0 }` with a `relu_mask`: the backward of a
///    ReLU, taken from the output it produced (laid out as C, NaN and zero count as not
///    positive);
/// 4. `v = 0` where `r >= valid_rows` or `j >= valid_cols` (padding);
///
/// then `v` is rounded to C's type. Every ISA gives the same bits.
///
/// ```
/// use dlrm_microkernels::{Batch, Brgemm, BrgemmDesc, Epilogue};
/// let k = Brgemm::new(BrgemmDesc::f32(2, 2, 1))?;
/// let (a, b) = ([1.0f32, -1.0], [2.0f32, -3.0]);
/// let mut c = [0f32; 4];
/// let epi = Epilogue { bias: Some(&[1.0, 0.0]), relu: true, ..Epilogue::none() };
/// k.run_with(Batch::strided(&a, &b, 1), &mut c, epi)?;
/// assert_eq!(c, [3.0, 0.0, 0.0, 3.0]); // relu([2 + 1, -3], [-2 + 1, 3])
/// # Ok::<(), dlrm_microkernels::KernelError>(())
/// ```
#[derive(Debug)]
pub struct Epilogue<'a, T> {
    /// One value per column of C (at least `n`), added after the reduction.
    pub bias: Option<&'a [f32]>,
    /// Apply ReLU after the bias.
    pub relu: bool,
    /// Keep a value only where this matrix, laid out as C (`m` rows of `ldc`), is positive.
    pub relu_mask: Option<&'a [T]>,
    /// Rows from this one on are stored as zero.
    pub valid_rows: usize,
    /// Columns from this one on are stored as zero.
    pub valid_cols: usize,
}

impl<T> Clone for Epilogue<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Epilogue<'_, T> {}

impl<T> Epilogue<'_, T> {
    /// Nothing done: C gets the reduction as it is (what [`Brgemm::run`] does).
    ///
    /// ```
    /// let e = dlrm_microkernels::Epilogue::<f32>::none();
    /// assert!(e.bias.is_none() && !e.relu && e.valid_rows == usize::MAX);
    /// ```
    pub fn none() -> Self {
        Epilogue {
            bias: None,
            relu: false,
            relu_mask: None,
            valid_rows: usize::MAX,
            valid_cols: usize::MAX,
        }
    }

    /// Whether any step changes a value.
    pub(crate) fn is_active(&self, m: usize, n: usize) -> bool {
        self.bias.is_some()
            || self.relu
            || self.relu_mask.is_some()
            || self.valid_rows < m
            || self.valid_cols < n
    }
}

/// How the (A_i, B_i) pairs of a batch are addressed.
///
/// ```
/// use dlrm_microkernels::BatchKind;
/// let kind = BatchKind::Strided { stride_a: 64 * 64, stride_b: 64 * 64 };
/// assert_eq!(kind.name(), "strided");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BatchKind {
    /// `A_i` starts at `i * stride_a` in one slice, `B_i` at `i * stride_b` in another.
    Strided {
        /// Elements between consecutive A matrices.
        stride_a: usize,
        /// Elements between consecutive B matrices.
        stride_b: usize,
    },
    /// `A_i` starts at `a_offsets[i]`, `B_i` at `b_offsets[i]`.
    Offsets,
    /// `A_i` and `B_i` are the i-th slices of two lists.
    Slices,
}

impl BatchKind {
    /// Lower-case name, for messages.
    ///
    /// ```
    /// assert_eq!(dlrm_microkernels::BatchKind::Slices.name(), "slices");
    /// ```
    pub fn name(&self) -> &'static str {
        match self {
            BatchKind::Strided { .. } => "strided",
            BatchKind::Offsets => "offsets",
            BatchKind::Slices => "slices",
        }
    }
}

/// How each A_i is stored.
///
/// ```
/// use dlrm_microkernels::{ALayout, Brgemm, BrgemmDesc, Batch};
/// // C = A^T B with A stored as its transpose ([k][m], lda >= m): no transpose pass needed.
/// let mut d = BrgemmDesc::f32(2, 1, 3);
/// d.a_layout = ALayout::Transposed;
/// d.lda = 2;
/// let at = [1.0f32, 4.0, 2.0, 5.0, 3.0, 6.0]; // A = [[1, 2, 3], [4, 5, 6]] stored [k][m]
/// let mut c = [0f32; 2];
/// Brgemm::new(d)?.run(Batch::strided(&at, &[1.0, 1.0, 1.0], 1), &mut c)?;
/// assert_eq!(c, [6.0, 15.0]);
/// # Ok::<(), dlrm_microkernels::KernelError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ALayout {
    /// `A[r][kk]` at `r * lda + kk` (`lda >= k`).
    #[default]
    RowMajor,
    /// A stored transposed, `[k][m]`: `A[r][kk]` at `kk * lda + r` (`lda >= m`). f32 only: a
    /// bf16 k pair must be adjacent in memory. Lets a weight gradient `x^T dy` read `x`
    /// blocks as they are.
    Transposed,
}

/// The layout a kernel expects its B operand in.
///
/// ```
/// use dlrm_microkernels::{BLayout, Brgemm, BrgemmDesc};
/// let k = Brgemm::new(BrgemmDesc::bf16(16, 16, 16))?;
/// assert_eq!(k.b_layout(), BLayout::Vnni2);
/// # Ok::<(), dlrm_microkernels::KernelError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BLayout {
    /// `B[kk][j]` at `kk * ldb + j`.
    RowMajor,
    /// `B[kk][j]` at `(kk / 2) * 2 * ldb + 2 * j + kk % 2` (see [`crate::vnni`]).
    Vnni2,
}

/// Everything a BRGEMM kernel needs to know before it sees data.
///
/// Build one with [`BrgemmDesc::f32`] or [`BrgemmDesc::bf16`] (tight leading dimensions,
/// back-to-back strided batch, [`Accum::Replace`]) and adjust the public fields.
///
/// ```
/// use dlrm_microkernels::{Accum, BatchKind, BrgemmDesc, DType};
///
/// let mut d = BrgemmDesc::bf16(64, 64, 64);
/// d.output = DType::Bf16;
/// d.accum = Accum::Accumulate;
/// d.batch = BatchKind::Offsets;
/// assert_eq!(d.flops(16), 2 * 64 * 64 * 64 * 16);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BrgemmDesc {
    /// Rows of A and C.
    pub m: usize,
    /// Columns of B and C.
    pub n: usize,
    /// Columns of A, rows of B: the reduced dimension.
    pub k: usize,
    /// Leading dimension of each A_i (at least `k`; at least `m` for [`ALayout::Transposed`]).
    pub lda: usize,
    /// Leading dimension of each B_i, in columns (at least `n`); see [`BLayout`].
    pub ldb: usize,
    /// Leading dimension of C (at least `n`).
    pub ldc: usize,
    /// Type of A and B.
    pub input: DType,
    /// Type of C (accumulation is always f32).
    pub output: DType,
    /// How each A_i is stored.
    pub a_layout: ALayout,
    /// How the batch is addressed.
    pub batch: BatchKind,
    /// Overwrite or add to C.
    pub accum: Accum,
}

impl BrgemmDesc {
    /// An f32 descriptor with tight leading dimensions, a strided batch of back-to-back
    /// matrices (`stride_a = m * k`, `stride_b = k * n`) and [`Accum::Replace`].
    ///
    /// A stride whose product overflows saturates at `usize::MAX`; [`Brgemm::new`] then
    /// refuses the descriptor with [`KernelError::Overflow`].
    ///
    /// ```
    /// let d = dlrm_microkernels::BrgemmDesc::f32(4, 5, 6);
    /// assert_eq!((d.lda, d.ldb, d.ldc), (6, 5, 5));
    /// ```
    pub fn f32(m: usize, n: usize, k: usize) -> Self {
        BrgemmDesc {
            m,
            n,
            k,
            lda: k,
            ldb: n,
            ldc: n,
            input: DType::F32,
            output: DType::F32,
            a_layout: ALayout::RowMajor,
            batch: BatchKind::Strided {
                stride_a: m.saturating_mul(k),
                stride_b: k.saturating_mul(n),
            },
            accum: Accum::Replace,
        }
    }

    /// A bf16-input, f32-output descriptor, otherwise as [`BrgemmDesc::f32`]; B is VNNI-2, so
    /// `stride_b = vnni::packed_len(k, n)`.
    ///
    /// ```
    /// let d = dlrm_microkernels::BrgemmDesc::bf16(4, 5, 7);
    /// assert_eq!(d.batch, dlrm_microkernels::BatchKind::Strided { stride_a: 28, stride_b: 40 });
    /// ```
    pub fn bf16(m: usize, n: usize, k: usize) -> Self {
        BrgemmDesc {
            input: DType::Bf16,
            batch: BatchKind::Strided {
                stride_a: m.saturating_mul(k),
                // vnni::packed_len(k, n), saturating as above.
                stride_b: k.div_ceil(2).saturating_mul(2).saturating_mul(n),
            },
            ..BrgemmDesc::f32(m, n, k)
        }
    }

    /// Floating-point operations of one run over `count` pairs (`2 m n k count`).
    ///
    /// ```
    /// assert_eq!(dlrm_microkernels::BrgemmDesc::f32(2, 3, 4).flops(5), 240);
    /// ```
    pub fn flops(&self, count: usize) -> u64 {
        2 * self.m as u64 * self.n as u64 * self.k as u64 * count as u64
    }

    /// The B layout this descriptor implies: VNNI-2 for bf16 input, row-major for f32.
    ///
    /// ```
    /// use dlrm_microkernels::{BLayout, BrgemmDesc};
    /// assert_eq!(BrgemmDesc::f32(1, 1, 1).b_layout(), BLayout::RowMajor);
    /// ```
    pub fn b_layout(&self) -> BLayout {
        match self.input {
            DType::F32 => BLayout::RowMajor,
            DType::Bf16 => BLayout::Vnni2,
        }
    }

    /// Check the descriptor on its own (without data).
    fn validate(&self) -> Result<(), KernelError> {
        if self.input == DType::F32 && self.output == DType::Bf16 {
            return Err(KernelError::UnsupportedTypes {
                input: self.input.name(),
                output: self.output.name(),
            });
        }
        if self.input == DType::Bf16 && self.a_layout == ALayout::Transposed {
            return Err(KernelError::Unsupported {
                what: "a transposed A with bf16 input (a k pair must be adjacent in memory)",
            });
        }
        let lda_min = match self.a_layout {
            ALayout::RowMajor => ("k", self.k),
            ALayout::Transposed => ("m", self.m),
        };
        let checks = [
            ("lda", self.lda, lda_min.0, lda_min.1),
            ("ldb", self.ldb, "n", self.n),
            ("ldc", self.ldc, "n", self.n),
        ];
        for (name, value, min_name, min) in checks {
            if value < min {
                return Err(KernelError::LeadingDimension {
                    name,
                    value,
                    min_name,
                    min,
                });
            }
        }
        // Every extent must be computable; run() then only multiplies by the batch position.
        self.extents()?;
        Ok(())
    }

    /// Elements one A_i, one B_i and C span (0 where nothing is read).
    fn extents(&self) -> Result<(usize, usize, usize), KernelError> {
        let ovf = |what| KernelError::Overflow { what };
        let (m, n, k) = (self.m, self.n, self.k);
        let (rows, cols) = match self.a_layout {
            ALayout::RowMajor => (m, k),
            ALayout::Transposed => (k, m),
        };
        let a = if m == 0 || k == 0 || n == 0 {
            0
        } else {
            (rows - 1)
                .checked_mul(self.lda)
                .and_then(|x| x.checked_add(cols))
                .ok_or(ovf("the extent of A"))?
        };
        let b = if m == 0 || k == 0 || n == 0 {
            0
        } else {
            match self.b_layout() {
                BLayout::RowMajor => (k - 1).checked_mul(self.ldb).and_then(|x| x.checked_add(n)),
                BLayout::Vnni2 => (k.div_ceil(2) - 1)
                    .checked_mul(2)
                    .and_then(|x| x.checked_mul(self.ldb))
                    .and_then(|x| x.checked_add(n.checked_mul(2)?)),
            }
            .ok_or(ovf("the extent of B"))?
        };
        let c = if m == 0 || n == 0 {
            0
        } else {
            (m - 1)
                .checked_mul(self.ldc)
                .and_then(|x| x.checked_add(n))
                .ok_or(ovf("the extent of C"))?
        };
        Ok((a, b, c))
    }
}

/// The batch of (A_i, B_i) pairs handed to [`Brgemm::run`]; its kind must match the
/// descriptor's [`BatchKind`].
///
/// ```
/// use dlrm_microkernels::Batch;
/// let a = [1.0f32; 8];
/// let b = [1.0f32; 8];
/// let batch = Batch::strided(&a, &b, 2);
/// assert_eq!(batch.count(), 2);
/// ```
#[derive(Debug)]
pub enum Batch<'a, T> {
    /// `count` pairs at the descriptor's fixed strides.
    Strided {
        /// Holds every A_i.
        a: &'a [T],
        /// Holds every B_i.
        b: &'a [T],
        /// Number of pairs.
        count: usize,
    },
    /// Pairs at per-pair offsets (both lists the same length, the count).
    Offsets {
        /// Holds every A_i.
        a: &'a [T],
        /// Holds every B_i.
        b: &'a [T],
        /// Start of each A_i in `a`.
        a_offsets: &'a [usize],
        /// Start of each B_i in `b`.
        b_offsets: &'a [usize],
    },
    /// Explicit slices (both lists the same length, the count).
    Slices {
        /// A_i = `a[i]`.
        a: &'a [&'a [T]],
        /// B_i = `b[i]`.
        b: &'a [&'a [T]],
    },
}

impl<T> Clone for Batch<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Batch<'_, T> {}

impl<'a, T> Batch<'a, T> {
    /// A strided batch of `count` pairs.
    ///
    /// ```
    /// let x = [0.0f32; 4];
    /// assert_eq!(dlrm_microkernels::Batch::strided(&x, &x, 1).count(), 1);
    /// ```
    pub fn strided(a: &'a [T], b: &'a [T], count: usize) -> Self {
        Batch::Strided { a, b, count }
    }

    /// A batch at per-pair offsets.
    ///
    /// ```
    /// let x = [0.0f32; 4];
    /// let b = dlrm_microkernels::Batch::offsets(&x, &x, &[0, 2], &[0, 2]);
    /// assert_eq!(b.count(), 2);
    /// ```
    pub fn offsets(a: &'a [T], b: &'a [T], a_offsets: &'a [usize], b_offsets: &'a [usize]) -> Self {
        Batch::Offsets {
            a,
            b,
            a_offsets,
            b_offsets,
        }
    }

    /// A batch of explicit slices.
    ///
    /// ```
    /// let x = [0.0f32; 4];
    /// let list = [&x[..]];
    /// let b = dlrm_microkernels::Batch::slices(&list, &list);
    /// assert_eq!(b.count(), 1);
    /// ```
    pub fn slices(a: &'a [&'a [T]], b: &'a [&'a [T]]) -> Self {
        Batch::Slices { a, b }
    }

    /// Number of pairs (for offsets and slices: the length of the A list).
    ///
    /// ```
    /// let x = [0.0f32; 1];
    /// assert_eq!(dlrm_microkernels::Batch::strided(&x, &x, 0).count(), 0);
    /// ```
    pub fn count(&self) -> usize {
        match self {
            Batch::Strided { count, .. } => *count,
            Batch::Offsets { a_offsets, .. } => a_offsets.len(),
            Batch::Slices { a, .. } => a.len(),
        }
    }

    fn kind_name(&self) -> &'static str {
        match self {
            Batch::Strided { .. } => "strided",
            Batch::Offsets { .. } => "offsets",
            Batch::Slices { .. } => "slices",
        }
    }
}

/// A BRGEMM kernel: a validated descriptor bound to an ISA. Cheap to copy and to run many
/// times; thread-safe.
///
/// ```
/// use dlrm_microkernels::{vnni, Batch, Brgemm, BrgemmDesc};
/// use half::bf16;
///
/// // bf16 x bf16 -> f32, one pair, k odd: B is packed to VNNI-2 with zero padding.
/// let (m, n, k) = (2, 2, 3);
/// let a: Vec<bf16> = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0].map(bf16::from_f32).to_vec();
/// let b_rows: Vec<bf16> = [1.0, 0.0, 0.0, 1.0, 1.0, 1.0].map(bf16::from_f32).to_vec();
/// let mut b = vec![bf16::ZERO; vnni::packed_len(k, n)];
/// vnni::pack(&b_rows, k, n, n, &mut b, n)?;
/// let kernel = Brgemm::new(BrgemmDesc::bf16(m, n, k))?;
/// let mut c = [0.0f32; 4];
/// kernel.run(Batch::strided(&a, &b, 1), &mut c)?;
/// assert_eq!(c, [4.0, 5.0, 10.0, 11.0]);
/// # Ok::<(), dlrm_microkernels::KernelError>(())
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Brgemm {
    desc: BrgemmDesc,
    isa: Isa,
    tile: RegisterTile,
    pair_outer: bool,
    bf16_gemm: Bf16Gemm,
    body: Body,
}

/// The backend body a kernel runs, chosen when it is built.
#[derive(Debug, Clone, Copy)]
enum Body {
    F32(BrgemmFn<f32, f32>),
    Bf16(Bf16Brgemm),
}

impl PartialEq for Brgemm {
    /// Kernels are equal when built from the same descriptor with the same choices.
    fn eq(&self, other: &Self) -> bool {
        let key = |k: &Brgemm| (k.desc, k.isa, k.tile, k.pair_outer, k.bf16_gemm);
        key(self) == key(other)
    }
}

impl Eq for Brgemm {}

impl Brgemm {
    /// A kernel for `desc` on the active ISA ([`Isa::active`]).
    ///
    /// # Errors
    ///
    /// [`KernelError::LeadingDimension`] when a leading dimension is too small,
    /// [`KernelError::UnsupportedTypes`] for f32 input with bf16 output,
    /// [`KernelError::Overflow`] for sizes that overflow, and the errors of [`Isa::active`].
    ///
    /// ```
    /// let k = dlrm_microkernels::Brgemm::new(dlrm_microkernels::BrgemmDesc::f32(8, 8, 8))?;
    /// assert_eq!(k.desc().m, 8);
    /// # Ok::<(), dlrm_microkernels::KernelError>(())
    /// ```
    pub fn new(desc: BrgemmDesc) -> Result<Self, KernelError> {
        Self::with_isa(desc, Isa::active()?)
    }

    /// A kernel for `desc` on a chosen ISA (tests and benchmarks use this to reach every path).
    ///
    /// # Errors
    ///
    /// As [`Brgemm::new`], and [`KernelError::IsaUnavailable`] when this CPU lacks `isa`.
    ///
    /// ```
    /// use dlrm_microkernels::{Brgemm, BrgemmDesc, Isa};
    /// let k = Brgemm::with_isa(BrgemmDesc::f32(8, 8, 8), Isa::Portable)?;
    /// assert_eq!(k.isa(), Isa::Portable);
    /// # Ok::<(), dlrm_microkernels::KernelError>(())
    /// ```
    pub fn with_isa(desc: BrgemmDesc, isa: Isa) -> Result<Self, KernelError> {
        desc.validate()?;
        let table = backend::get(isa)?;
        let tuning = Tuning::for_backend(isa)?;
        let (tile, body) = match desc.input {
            DType::F32 => (tuning.f32_tile, Body::F32(table.brgemm_f32)),
            DType::Bf16 => {
                let body = table
                    .bf16_body(tuning.bf16_gemm)
                    .unwrap_or(table.brgemm_bf16_widen);
                (tuning.bf16_tile, Body::Bf16(body))
            }
        };
        Ok(Brgemm {
            desc,
            isa,
            tile,
            pair_outer: tuning.pair_outer,
            bf16_gemm: tuning.bf16_gemm,
            body,
        })
    }

    /// A kernel on a chosen ISA with some of the CPU table's choices overridden: for
    /// benchmarks comparing tiles or bf16 paths, and tests that reach every path. (No tile
    /// changes a result: every element of C sums its products in the same order.)
    ///
    /// # Errors
    ///
    /// As [`Brgemm::with_isa`], and [`KernelError::Unsupported`] for a tile larger than the
    /// backend's register file holds (or with no rows or columns), or a bf16 path the backend
    /// does not have.
    ///
    /// ```
    /// use dlrm_microkernels::{tuning::Overrides, Brgemm, BrgemmDesc, Isa, RegisterTile};
    /// let tile = RegisterTile { rows: 4, cols: 2 };
    /// let o = Overrides { tile: Some(tile), ..Overrides::default() };
    /// let k = Brgemm::with_overrides(BrgemmDesc::f32(16, 16, 16), Isa::Portable, o)?;
    /// assert_eq!(k.register_tile(), tile);
    /// # Ok::<(), dlrm_microkernels::KernelError>(())
    /// ```
    pub fn with_overrides(
        desc: BrgemmDesc,
        isa: Isa,
        overrides: Overrides,
    ) -> Result<Self, KernelError> {
        let mut k = Self::with_isa(desc, isa)?;
        let table = backend::get(isa)?;
        if let Some(tile) = overrides.tile {
            let max = match desc.input {
                DType::F32 => table.max_tile_f32,
                DType::Bf16 => table.max_tile_bf16,
            };
            let fits = tile.rows <= max.rows
                && tile.cols <= max.cols
                && tile.accumulators() <= table.max_accumulators;
            if tile.rows == 0 || tile.cols == 0 || !fits {
                return Err(KernelError::Unsupported {
                    what: "a register tile larger than the backend's registers hold",
                });
            }
            k.tile = tile;
        }
        if let Some(outer) = overrides.pair_outer {
            k.pair_outer = outer;
        }
        if let Some(path) = overrides.bf16_gemm {
            let body = table.bf16_body(path).ok_or(KernelError::Unsupported {
                what: "a bf16 path this backend lacks",
            })?;
            k.bf16_gemm = path;
            if desc.input == DType::Bf16 {
                k.body = Body::Bf16(body);
            }
        }
        Ok(k)
    }

    /// The largest register tile this kernel uses (rows of C by vectors of columns), from
    /// the CPU table of [`crate::tuning`].
    ///
    /// ```
    /// let k = dlrm_microkernels::Brgemm::new(dlrm_microkernels::BrgemmDesc::f32(64, 64, 64))?;
    /// assert!(k.register_tile().accumulators() >= 1);
    /// # Ok::<(), dlrm_microkernels::KernelError>(())
    /// ```
    pub fn register_tile(&self) -> RegisterTile {
        self.tile
    }

    /// How this kernel multiplies bf16 (for f32 kernels: what a bf16 kernel would use).
    ///
    /// ```
    /// use dlrm_microkernels::{tuning::Bf16Gemm, Brgemm, BrgemmDesc, Isa};
    /// # if std::env::var("DLRM_BF16_GEMM").map_or(true, |v| v != "dot") {
    /// let k = Brgemm::with_isa(BrgemmDesc::bf16(8, 8, 8), Isa::Portable)?;
    /// assert_eq!(k.bf16_gemm(), Bf16Gemm::Widen);
    /// # }
    /// # Ok::<(), dlrm_microkernels::KernelError>(())
    /// ```
    pub fn bf16_gemm(&self) -> Bf16Gemm {
        self.bf16_gemm
    }

    /// The descriptor this kernel was built from.
    ///
    /// ```
    /// let d = dlrm_microkernels::BrgemmDesc::f32(3, 4, 5);
    /// assert_eq!(*dlrm_microkernels::Brgemm::new(d)?.desc(), d);
    /// # Ok::<(), dlrm_microkernels::KernelError>(())
    /// ```
    pub fn desc(&self) -> &BrgemmDesc {
        &self.desc
    }

    /// The ISA this kernel runs on.
    ///
    /// ```
    /// let k = dlrm_microkernels::Brgemm::new(dlrm_microkernels::BrgemmDesc::f32(1, 1, 1))?;
    /// assert!(k.isa().is_available());
    /// # Ok::<(), dlrm_microkernels::KernelError>(())
    /// ```
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// The layout this kernel expects B in: [`BLayout::Vnni2`] for bf16, row-major for f32.
    ///
    /// ```
    /// use dlrm_microkernels::{BLayout, Brgemm, BrgemmDesc};
    /// assert_eq!(Brgemm::new(BrgemmDesc::f32(1, 1, 1))?.b_layout(), BLayout::RowMajor);
    /// # Ok::<(), dlrm_microkernels::KernelError>(())
    /// ```
    pub fn b_layout(&self) -> BLayout {
        self.desc.b_layout()
    }

    /// Run the kernel: `C (=|+=) sum_i A_i B_i`.
    ///
    /// Every access is checked once per call, before anything is written.
    ///
    /// # Errors
    ///
    /// [`KernelError::TypeMismatch`] if `I`/`O` differ from the descriptor's types,
    /// [`KernelError::BatchKindMismatch`] if the batch is of another kind,
    /// [`KernelError::LengthMismatch`] if the A and B lists differ in length, and
    /// [`KernelError::SliceTooShort`] (naming the operand and batch position) if an access
    /// would fall outside its slice. On error C is untouched.
    ///
    /// ```
    /// use dlrm_microkernels::{Batch, Brgemm, BrgemmDesc, KernelError};
    /// let k = Brgemm::new(BrgemmDesc::f32(2, 2, 2))?;
    /// let a = [1.0f32; 4];
    /// let mut c = [0.0f32; 3]; // one short
    /// let err = k.run(Batch::strided(&a, &a, 1), &mut c).unwrap_err();
    /// assert_eq!(err.to_string(), "C slice too short: needs 4 elements, has 3");
    /// # Ok::<(), KernelError>(())
    /// ```
    pub fn run<I: Element, O: Element>(
        &self,
        batch: Batch<'_, I>,
        c: &mut [O],
    ) -> Result<(), KernelError> {
        self.run_with(batch, c, Epilogue::none())
    }

    /// [`Brgemm::run`] with an [`Epilogue`] applied to each value before it is stored.
    ///
    /// # Errors
    ///
    /// As [`Brgemm::run`], and [`KernelError::SliceTooShort`] for a bias shorter than `n`
    /// (operand `"bias"`) or a mask shorter than C's extent (`"relu_mask"`). On error C is
    /// untouched.
    ///
    /// ```
    /// use dlrm_microkernels::{Batch, Brgemm, BrgemmDesc, Epilogue};
    /// // The backward of a ReLU: keep C where the layer output was positive.
    /// let k = Brgemm::new(BrgemmDesc::f32(1, 3, 1))?;
    /// let mut c = [0f32; 3];
    /// let y = [0.5f32, 0.0, -1.0];
    /// let epi = Epilogue { relu_mask: Some(&y[..]), ..Epilogue::none() };
    /// k.run_with(Batch::strided(&[2.0f32], &[1.0f32, 2.0, 3.0], 1), &mut c, epi)?;
    /// assert_eq!(c, [2.0, 0.0, 0.0]);
    /// # Ok::<(), dlrm_microkernels::KernelError>(())
    /// ```
    pub fn run_with<I: Element, O: Element>(
        &self,
        batch: Batch<'_, I>,
        c: &mut [O],
        epilogue: Epilogue<'_, O>,
    ) -> Result<(), KernelError> {
        let d = &self.desc;
        if I::DTYPE != d.input {
            return Err(KernelError::TypeMismatch {
                operand: "A/B",
                expected: d.input.name(),
                got: I::DTYPE.name(),
            });
        }
        if O::DTYPE != d.output {
            return Err(KernelError::TypeMismatch {
                operand: "C",
                expected: d.output.name(),
                got: O::DTYPE.name(),
            });
        }
        let count = self.check_batch(&batch)?;
        let (_, _, c_extent) = d.extents()?;
        fits("C", c_extent, c.len())?;
        if let Some(b) = epilogue.bias {
            fits("bias", d.n, b.len())?;
        }
        if let Some(m) = epilogue.relu_mask {
            fits("relu_mask", c_extent, m.len())?;
        }
        if d.m == 0 || d.n == 0 {
            return Ok(());
        }
        let (a_extent, b_extent, _) = d.extents()?;
        let p = Params {
            m: d.m,
            n: d.n,
            k: d.k,
            a_row: if d.a_layout == ALayout::RowMajor {
                d.lda
            } else {
                1
            },
            a_k: if d.a_layout == ALayout::RowMajor {
                1
            } else {
                d.lda
            },
            ldb: d.ldb,
            ldc: d.ldc,
            count: if d.k == 0 { 0 } else { count },
            accumulate: d.accum == Accum::Accumulate,
            a_extent,
            b_extent,
            c_extent,
            tile: self.tile,
            pair_outer: self.pair_outer,
            epi: EpiPtrs {
                active: epilogue.is_active(d.m, d.n),
                bias: epilogue.bias.map_or(core::ptr::null(), <[f32]>::as_ptr),
                relu: epilogue.relu,
                mask: epilogue
                    .relu_mask
                    .map_or(core::ptr::null(), |m| m.as_ptr().cast()),
                valid_rows: epilogue.valid_rows,
                valid_cols: epilogue.valid_cols,
            },
        };
        let cp = c.as_mut_ptr();
        // SAFETY: `check_batch` and the checks above proved every access the descriptor
        // implies lies inside its slice (the extents in `p`); the body comes from the table of
        // a backend this CPU runs (`backend::get` when the kernel was built); the casts are
        // identities, since I::DTYPE and O::DTYPE equal the descriptor's types and the body
        // was chosen for those types.
        unsafe {
            match (self.body, d.output) {
                (Body::F32(f), _) => f(&p, &batch_ptrs(batch, d.batch), cp.cast()),
                (Body::Bf16(f), DType::F32) => {
                    (f.to_f32)(&p, &batch_ptrs(batch, d.batch), cp.cast())
                }
                (Body::Bf16(f), DType::Bf16) => {
                    (f.to_bf16)(&p, &batch_ptrs(batch, d.batch), cp.cast())
                }
            }
        }
        Ok(())
    }

    /// Check the batch against the descriptor; returns the count.
    fn check_batch<T>(&self, batch: &Batch<'_, T>) -> Result<usize, KernelError> {
        let d = &self.desc;
        let kind_ok = matches!(
            (batch, d.batch),
            (Batch::Strided { .. }, BatchKind::Strided { .. })
                | (Batch::Offsets { .. }, BatchKind::Offsets)
                | (Batch::Slices { .. }, BatchKind::Slices)
        );
        if !kind_ok {
            return Err(KernelError::BatchKindMismatch {
                expected: d.batch.name(),
                got: batch.kind_name(),
            });
        }
        let (a_ext, b_ext, _) = d.extents()?;
        let fits = |operand, i, start: usize, ext: usize, len: usize| {
            let needed = start.checked_add(ext).ok_or(KernelError::Overflow {
                what: "a batch position's extent",
            })?;
            if ext > 0 && needed > len {
                Err(KernelError::SliceTooShort {
                    operand,
                    batch_index: Some(i),
                    needed,
                    len,
                })
            } else {
                Ok(())
            }
        };
        match (*batch, d.batch) {
            (Batch::Strided { a, b, count }, BatchKind::Strided { stride_a, stride_b }) => {
                if count > 0 {
                    let last = count - 1;
                    let ovf = KernelError::Overflow {
                        what: "the start of the last batch pair",
                    };
                    let sa = last.checked_mul(stride_a).ok_or(ovf.clone())?;
                    let sb = last.checked_mul(stride_b).ok_or(ovf)?;
                    fits("A", last, sa, a_ext, a.len())?;
                    fits("B", last, sb, b_ext, b.len())?;
                }
                Ok(count)
            }
            (
                Batch::Offsets {
                    a,
                    b,
                    a_offsets,
                    b_offsets,
                },
                _,
            ) => {
                if a_offsets.len() != b_offsets.len() {
                    return Err(KernelError::LengthMismatch {
                        what: "a_offsets and b_offsets",
                        left: a_offsets.len(),
                        right: b_offsets.len(),
                    });
                }
                for (i, (&oa, &ob)) in a_offsets.iter().zip(b_offsets).enumerate() {
                    fits("A", i, oa, a_ext, a.len())?;
                    fits("B", i, ob, b_ext, b.len())?;
                }
                Ok(a_offsets.len())
            }
            (Batch::Slices { a, b }, _) => {
                if a.len() != b.len() {
                    return Err(KernelError::LengthMismatch {
                        what: "the A and B slice lists",
                        left: a.len(),
                        right: b.len(),
                    });
                }
                for (i, (ai, bi)) in a.iter().zip(b).enumerate() {
                    fits("A", i, 0, a_ext, ai.len())?;
                    fits("B", i, 0, b_ext, bi.len())?;
                }
                Ok(a.len())
            }
            _ => unreachable!("kind checked above"),
        }
    }
}

/// A checked batch as the raw pointers the backends take, its element type reinterpreted as
/// `U`.
///
/// # Safety
///
/// `U` is the same type as `T` (callers compare `Element::DTYPE`), and the batch's kind is
/// `kind` (checked by `Brgemm::check_batch`).
unsafe fn batch_ptrs<'a, T, U>(batch: Batch<'a, T>, kind: BatchKind) -> BatchPtrs<'a, U> {
    match (batch, kind) {
        (Batch::Strided { a, b, .. }, BatchKind::Strided { stride_a, stride_b }) => {
            BatchPtrs::Strided {
                a: a.as_ptr().cast(),
                b: b.as_ptr().cast(),
                stride_a,
                stride_b,
            }
        }
        (
            Batch::Offsets {
                a,
                b,
                a_offsets,
                b_offsets,
            },
            _,
        ) => BatchPtrs::Offsets {
            a: a.as_ptr().cast(),
            b: b.as_ptr().cast(),
            a_offsets,
            b_offsets,
        },
        // SAFETY: T and U are the same type (caller), so the slice-of-slice
        // reinterpretation is an identity.
        (Batch::Slices { a, b }, _) => unsafe {
            BatchPtrs::Slices {
                a: &*(a as *const [&[T]] as *const [&[U]]),
                b: &*(b as *const [&[T]] as *const [&[U]]),
            }
        },
        _ => unreachable!("batch kind checked by Brgemm::run"),
    }
}
