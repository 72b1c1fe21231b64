//! AVX2 embedding-bag kernels: pooling with software prefetch, and the fused
//! coalesce-and-update: the shared bodies ([`crate::backend::x86::embedding`]) on ymm.

crate::backend::x86::embedding::shims!("avx2,fma,f16c", super::Ymm);
