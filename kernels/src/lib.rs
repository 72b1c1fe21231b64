//! Microkernels for `dlrm-kernels`: batch-reduce GEMM (BRGEMM) with AVX2, AVX-512 fp32,
//! AVX512-BF16 and portable paths, and the element-wise pieces around it.
//!
//! | module | what |
//! |---|---|
//! | [`brgemm`], [`vnni`] | the BRGEMM descriptor, kernel and batches; the VNNI-2 layout of bf16 B |
//! | [`embedding`] | embedding-bag row kernels: pooling with prefetch, the fused sparse update, huge-page buffers |
//! | [`convert`], [`sgd`] | f32 <-> bf16 (round to nearest even), the Split-SGD split/join and updates |
//! | [`eltwise`] | the MLP's bias + activation epilogue, activation derivative, column sums |
//! | [`reorder`] | block transposes and VNNI-2 pair packing (AVX2, AVX-512 or plain loops) |
//! | [`isa`], [`peak`] | run-time ISA detection (`DLRM_ISA`), the FMA / `vdpbf16ps` peak loops |
//! | [`affinity`] | pinning a thread to a CPU (Linux), so it keeps its caches |
//! | [`mmap`] | read-only memory-mapped files (the binary dataset reader) |
//! | [`prefetch`] | software prefetch of a later task's operand into L2 |
//! | [`sort`] | sorting a short list and dropping repeats (the random generator's bags) |
//!
//! This crate holds all the `unsafe` SIMD code of the project; everything above it is safe.
//! Kernels follow one pattern: *describe once, get a kernel, run it many times*. A
//! descriptor with named fields is validated when the kernel is built; `run` checks, once per
//! call, that every access fits its slice, and returns an error before writing anything
//! otherwise.
//!
//! # BRGEMM
//!
//! `C[m x n] (= or +=) sum_{i < count} A_i[m x k] * B_i[k x n]`, row-major with leading
//! dimensions; f32 x f32 -> f32, bf16 x bf16 -> f32 and bf16 x bf16 -> bf16 (round to
//! nearest even on store), accumulation always in f32. bf16 B is in VNNI-2 layout (see
//! [`vnni`]). See [`brgemm`] for the batch kinds. [`Brgemm::run_with`] also applies an
//! [`Epilogue`] (bias, ReLU, a ReLU's backward mask, zeroed padding) to the registers before
//! the store, so a layer's output is written once.
//!
//! # ISAs
//!
//! | [`Isa`] | needs | f32 | bf16 |
//! |---|---|---|---|
//! | `Portable` | any CPU | scalar/auto-vectorised | widened to f32 |
//! | `Avx2` | AVX2, FMA, F16C | ymm FMA, 6x16 register tile | widened to f32, 2 FMA per pair |
//! | `Avx512` | AVX-512 F, BW, VL, DQ | zmm FMA, 6x64 register tile | widened to f32, 2 FMA per pair |
//! | `Avx512Bf16` | + AVX512-BF16 | as `Avx512` | `vdpbf16ps`, 6x64 register tile |
//!
//! The best ISA is detected once and cached; `DLRM_ISA=portable|avx2|avx512|avx512bf16|amx`
//! selects another one the CPU has, and [`Brgemm::with_isa`] picks one explicitly.
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
