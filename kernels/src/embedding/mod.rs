//! Embedding-bag row kernels (gather-reduce, fused sparse updates). Being written.
