//! AVX-512 pairwise dots of a few vectors (the dot interaction): the shared bodies
//! ([`crate::backend::x86::pair_dots`]) on zmm.

crate::backend::x86::pair_dots::shims!("avx512f,avx512bw,avx512vl,avx512dq", super::Zmm);
