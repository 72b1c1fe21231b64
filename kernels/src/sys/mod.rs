//! The operating-system side of the kernels, apart from the SIMD code: memory-mapped files,
//! huge-page buffers for large tables, and pinning threads to CPUs. Every system call of the
//! crate is here.

pub mod affinity;
pub(crate) mod hugepage;
pub mod mmap;
