//! AVX-512 (F, BW, VL, DQ) embedding-bag kernels: pooling with software prefetch, and the
//! fused coalesce-and-update: the shared bodies ([`crate::backend::x86::embedding`]) on zmm.

crate::backend::x86::embedding::shims!("avx512f,avx512bw,avx512vl,avx512dq", super::Zmm);
