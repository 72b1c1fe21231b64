//! AVX-512 conversions between f32 and bf16, the Split-SGD split and join, and the SGD
//! updates: the shared bodies ([`crate::backend::x86::convert`]) on zmm.

crate::backend::x86::convert::shims!("avx512f,avx512bw,avx512vl,avx512dq", super::Zmm);
