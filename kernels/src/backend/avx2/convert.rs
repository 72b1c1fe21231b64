//! AVX2 conversions between f32 and bf16, the Split-SGD split and join, and the SGD
//! updates: the shared bodies ([`crate::backend::x86::convert`]) on ymm.

crate::backend::x86::convert::shims!("avx2,fma,f16c", super::Ymm);
