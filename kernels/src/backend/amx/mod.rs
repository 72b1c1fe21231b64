//! The AMX backend: `avx512bf16`'s entries, named one by one, with bf16 GEMMs on tile
//! registers (`tdpbf16ps`, about 16 times the `vdpbf16ps` rate per core) and the tile peak
//! loop.
//!
//! | file | what |
//! |---|---|
//! | `tiles.rs` | the tile BRGEMM body, written once against the tile instructions |
//! | `hw.rs` | the instructions on the hardware (`asm!`) |
//! | `model.rs` | the instructions in software, for tests on any CPU |
//!
//! Each kernel run configures the tiles (`ldtilecfg`) on entry and releases them
//! (`tilerelease`) before it returns, so no tile state outlives the call on a thread that
//! goes on to run other code (rayon workers live long).

pub(crate) mod model;
pub(crate) mod tiles;

#[cfg(target_arch = "x86_64")]
mod hw;

#[cfg(target_arch = "x86_64")]
pub(crate) use x86::BACKEND;

#[cfg(target_arch = "x86_64")]
mod x86 {
    use half::bf16;

    use super::hw::{self, Hw};
    use super::model;
    use crate::abi::{BatchPtrs, Bf16Brgemm, Params, PeakLoop};
    use crate::backend::{Backend, avx512, avx512bf16, portable};
    use crate::{Isa, RegisterTile};

    /// The AMX table.
    pub(crate) static BACKEND: Backend = Backend {
        isa: Isa::Amx,
        lanes: 16,
        max_tile_f32: avx512::MAX_TILE_F32,
        max_tile_bf16: RegisterTile { rows: 14, cols: 4 },
        max_accumulators: 28,
        block: 64,
        whole_input_max: 128,
        brgemm_f32: avx512::brgemm::f32_f32,
        brgemm_bf16_widen: Bf16Brgemm {
            to_f32: avx512::brgemm::bf16_widen_f32,
            to_bf16: avx512::brgemm::bf16_widen_bf16,
        },
        brgemm_bf16_dot: Some(avx512bf16::DOT),
        brgemm_bf16_tiles: Some(Bf16Brgemm {
            to_f32: tiles_f32,
            to_bf16: tiles_bf16,
        }),
        brgemm_bf16_tiles_model: model::MODEL,
        f32_to_bf16: avx512::convert::f32_to_bf16,
        bf16_to_f32: avx512::convert::bf16_to_f32,
        split_f32: avx512::convert::split_f32,
        join_f32: avx512::convert::join_f32,
        sgd: avx512::convert::sgd,
        split_sgd: avx512::convert::split_sgd,
        transpose32: avx512::reorder::transpose32,
        transpose16: avx512::reorder::transpose16,
        pack_pairs32: avx512::reorder::pack_pairs32,
        pack_pairs16: avx512::reorder::pack_pairs16,
        unpack_pairs32: portable::unpack_pairs::<u32>,
        unpack_pairs16: avx512::reorder::unpack_pairs16,
        pool: avx512::embedding::pool,
        apply: avx512::embedding::apply,
        pair_dots_forward: avx512::pair_dots::forward,
        pair_dots_backward: avx512::pair_dots::backward,
        sort_unique: avx512::sort::sort_unique,
        eltwise: avx512::ELTWISE,
        fma_peak: Some(avx512::FMA_PEAK),
        bf16_dot_peak: Some(avx512bf16::DOT_PEAK),
        tile_peak: Some(PeakLoop {
            flops_per_iteration: 4 * 2 * 16 * 16 * 32,
            run: hw::peak,
        }),
    };

    /// bf16 x bf16 -> f32 on tiles.
    ///
    /// # Safety
    ///
    /// As [`crate::abi::BrgemmFn`], with AMX granted to this process and AVX-512 (the
    /// edges and epilogue are compiled for it).
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")]
    unsafe fn tiles_f32(p: &Params, batch: &BatchPtrs<'_, bf16>, c: *mut f32) {
        // SAFETY: forwarded from the caller.
        unsafe { super::tiles::brgemm(&mut Hw, p, batch, c) }
    }

    /// bf16 x bf16 -> bf16 on tiles.
    ///
    /// # Safety
    ///
    /// As [`tiles_f32`].
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")]
    unsafe fn tiles_bf16(p: &Params, batch: &BatchPtrs<'_, bf16>, c: *mut bf16) {
        // SAFETY: forwarded from the caller.
        unsafe { super::tiles::brgemm(&mut Hw, p, batch, c) }
    }
}
