//! The operating-system side of the kernels, apart from the SIMD code: memory-mapped files,
//! huge-page buffers for large tables, pinning threads to CPUs, and the AMX permission
//! request. Every system call of the crate is here.

pub mod affinity;
pub mod amx;
pub(crate) mod hugepage;
pub mod mmap;
