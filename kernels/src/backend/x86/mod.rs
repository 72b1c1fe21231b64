//! What the x86 SIMD backends share: the [`Vector`] abstraction over register width and lane
//! masks, and the bodies written once against it, which each backend instantiates with its
//! registers in thin `#[target_feature]` shims (the `shims!` macros of the modules expand
//! them).
//!
//! | module | what |
//! |---|---|
//! | `vector` | [`Vector`]: one register type, its lane masks, loads and stores of f32, bf16 and Split-SGD halves |
//! | `tile` | the BRGEMM register-tile body, generic over `Vector` and the k step (`Dot`) |
//! | `embedding` | pooling with prefetch, the fused coalesce-and-update |
//! | `convert` | f32 <-> bf16, the Split-SGD split / join, the SGD updates |
//! | `pair_dots` | pairwise dots and their backward |
//! | `eltwise` | the portable element-wise bodies compiled for a backend |

pub(crate) mod convert;
pub(crate) mod eltwise;
pub(crate) mod embedding;
pub(crate) mod pair_dots;
pub(crate) mod tile;
pub(crate) mod vector;

pub(crate) use vector::Vector;
