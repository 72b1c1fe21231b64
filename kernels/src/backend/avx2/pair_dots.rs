//! AVX2 pairwise dots of a few vectors (the dot interaction): the shared bodies
//! ([`crate::backend::x86::pair_dots`]) on ymm, two accumulators per 16 lanes.

crate::backend::x86::pair_dots::shims!("avx2,fma,f16c", super::Ymm);
