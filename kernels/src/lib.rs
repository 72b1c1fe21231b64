//! Microkernels for `dlrm-kernels`: batch-reduce GEMM (BRGEMM) on AVX2, AVX-512, AVX512-BF16
//! and AMX tiles, with a portable fallback, and the element-wise, embedding and reorder kernels
//! around it.
//!
//! | module | what |
//! |---|---|
//! | [`brgemm`], [`vnni`] | the BRGEMM descriptor, kernel and batches; the VNNI-2 layout of bf16 B |
//! | [`embedding`] | embedding-bag row kernels: pooling with prefetch, the fused sparse update, huge-page buffers |
//! | [`convert`], [`sgd`] | f32 <-> bf16 (round to nearest even), the Split-SGD split/join and updates |
//! | [`eltwise`] | the MLP's bias + activation epilogue, activation derivative, column sums |
//! | [`reorder`] | block transposes and VNNI-2 pair packing |
//! | [`pair_dots`] | the pairwise dots of the DLRM interaction and their gradient |
//! | [`sort`] | sorting a short list and dropping repeats (the random generator's bags) |
//! | [`isa`], [`cpu`], [`tuning`], [`diagnostics`] | the backends (`DLRM_ISA`), CPU features from CPUID and XCR0, per-CPU choices (register tile, bf16 path), a report of all of it |
//! | [`peak`] | the FMA / `vdpbf16ps` / `tdpbf16ps` peak loops benchmarks compare against |
//! | [`sys`] ([`affinity`], [`mmap`], [`sys::amx`]) | the OS side: pinning threads, mapped files, huge pages, the AMX permission request |
//! | [`prefetch`] | software prefetch of a later task's operand into L2 |
//!
//! This crate holds all the `unsafe` code of the project; everything above it is safe.
//! Kernels follow one pattern: *describe once, get a kernel, run it many times*. A
//! descriptor with named fields is validated when the kernel is built; `run` checks, once per
//! call, that every access fits its slice, and returns an error before writing anything
//! otherwise. Each kernel runs the entry of one backend's dispatch table (`backend/` in the
//! source: one module per instruction set), chosen when the kernel is built.
//!
//! # BRGEMM
//!
//! `C[m x n] (= or +=) sum_{i < count} A_i[m x k] * B_i[k x n]`, row-major with leading
//! dimensions; f32 x f32 -> f32, bf16 x bf16 -> f32 and bf16 x bf16 -> bf16 (round to
//! nearest even on store), accumulation always in f32. bf16 B is in VNNI-2 layout (see
//! [`vnni`]). See [`brgemm`] for the batch kinds. [`Brgemm::run_with`] also applies an
//! [`Epilogue`] (bias, ReLU, a ReLU's backward mask, zeroed padding) before the store, so a
//! layer's output is written once.
//!
//! # Backends
//!
//! | [`Isa`] | needs | f32 | bf16 |
//! |---|---|---|---|
//! | `Portable` | any CPU | scalar/auto-vectorised | widened to f32 |
//! | `Avx2` | AVX2, FMA, F16C | ymm FMA, 6 x 2 ymm register tile | widened to f32, 2 FMA per pair |
//! | `Avx512` | AVX-512 F, BW, VL, DQ | zmm FMA register tile (per-CPU shape, [`tuning`]) | widened to f32, 2 FMA per pair |
//! | `Avx512Bf16` | + AVX512-BF16 | as `Avx512` | `vdpbf16ps`, or widened where the CPU table says `vdpbf16ps` is slower |
//! | `Amx` | + AMX-TILE, AMX-BF16, and Linux granting the tile state | as `Avx512` | `tdpbf16ps` on 16 x 16 tiles (2 x 2 C tiles per block) |
//!
//! The most preferred backend the CPU runs is detected once and cached;
//! `DLRM_ISA=portable|avx2|avx512|avx512bf16|amx` selects another, and [`Brgemm::with_isa`] picks
//! one explicitly. `DLRM_BF16_GEMM=dot|widen|tiles|tiles-model` forces the bf16 path.
//!
//! Results: every backend gives the same bits for everything but the BRGEMM, whose
//! summation order is its own; each BRGEMM stays within `k_total x 2^-24 x sum |terms|` of
//! the exact result (`k_total` products summed). AMX results in particular differ in the last
//! bits from every other backend and from any simple model of the instruction (its internal
//! rounding is undocumented in detail); they agree bit for bit with the others where the
//! arithmetic is exact (small integer-valued operands), which is how the tests check its
//! layouts, edges and epilogues.
//!
//! ```
//! use dlrm_microkernels::{Accum, Batch, Brgemm, BrgemmDesc, Isa};
//!
//! let (m, n, k, count) = (16, 16, 16, 4);
//! let a = vec![1.0f32; m * k * count];
//! let b = vec![0.5f32; k * n * count];
//! let mut c = vec![0.0f32; m * n];
//! for isa in Isa::available() {
//!     let kernel = Brgemm::with_isa(BrgemmDesc::f32(m, n, k), isa)?;
//!     kernel.run(Batch::strided(&a, &b, count), &mut c)?;
//!     assert!(c.iter().all(|&x| x == 0.5 * (k * count) as f32));
//! }
//! # Ok::<(), dlrm_microkernels::KernelError>(())
//! ```

#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

mod abi;
mod activation;
mod backend;
#[cfg(feature = "baselines")]
pub mod baselines;
pub mod brgemm;
pub mod convert;
pub mod cpu;
pub mod diagnostics;
mod dtype;
pub mod eltwise;
pub mod embedding;
mod error;
pub mod isa;
pub mod pair_dots;
pub mod peak;
pub mod prefetch;
pub mod reorder;
pub mod sgd;
pub mod sort;
pub mod sys;
pub mod tuning;
pub mod vnni;

pub use abi::RegisterTile;
pub use brgemm::{ALayout, Accum, BLayout, Batch, BatchKind, Brgemm, BrgemmDesc, Epilogue};
pub use dtype::{DType, Element, SliceMut, SliceRef};
pub use error::KernelError;
pub use half::bf16;
pub use isa::Isa;
pub use sys::{affinity, mmap};
