//! A software model of the tile instructions, behind the same [`TileOps`] interface as the
//! hardware, so that the tile BRGEMM's blocking, packing, edges and epilogue run (and are
//! tested) on any CPU.
//!
//! Arithmetic follows the instruction's description: bf16 inputs widened exactly, denormal
//! inputs read as zero, each product added to the f32 accumulator with round-to-nearest-even
//! (the even-k product, then the odd-k one), denormal results flushed to zero. Real hardware
//! does not round exactly like this (nor like any simple model): results agree bit for bit
//! where the arithmetic is exact (small integer-valued operands), and otherwise within the
//! usual f32 accumulation bound.

use half::bf16;

use super::tiles::{ROW_BYTES, ROWS, TileConfig, TileOps};
use crate::abi::{BatchPtrs, Bf16Brgemm, Params};

/// Eight tile registers and their configuration, in memory.
pub(crate) struct Model {
    cfg: Option<TileConfig>,
    tiles: Box<[[u8; ROWS * ROW_BYTES]; 8]>,
}

impl Model {
    fn new() -> Model {
        Model {
            cfg: None,
            tiles: Box::new([[0; ROWS * ROW_BYTES]; 8]),
        }
    }

    /// Rows and bytes per row of tile `t`, as configured.
    fn shape(&self, t: usize) -> (usize, usize) {
        let cfg = self.cfg.as_ref().expect("tile used before ldtilecfg");
        (usize::from(cfg.rows[t]), usize::from(cfg.colsb[t]))
    }

    fn f32_at(&self, t: usize, r: usize, i: usize) -> f32 {
        let o = r * ROW_BYTES + 4 * i;
        f32::from_le_bytes(self.tiles[t][o..o + 4].try_into().expect("4 bytes"))
    }

    fn bf16_at(&self, t: usize, r: usize, i: usize) -> f32 {
        let o = r * ROW_BYTES + 2 * i;
        let v = bf16::from_le_bytes([self.tiles[t][o], self.tiles[t][o + 1]]).to_f32();
        if v.is_subnormal() { 0.0 } else { v }
    }
}

/// Round-to-nearest-even f32 addition with denormal results flushed to zero.
fn add_ftz(a: f32, b: f32) -> f32 {
    let s = a + b;
    if s.is_subnormal() {
        0.0 * s.signum()
    } else {
        s
    }
}

impl TileOps for Model {
    unsafe fn configure(&mut self, cfg: &TileConfig) {
        self.cfg = Some(*cfg);
        for t in self.tiles.iter_mut() {
            t.fill(0);
        }
    }
    unsafe fn zero(&mut self, t: usize) {
        self.tiles[t].fill(0);
    }
    unsafe fn load(&mut self, t: usize, ptr: *const u8, stride: usize) {
        let (rows, bytes) = self.shape(t);
        self.tiles[t].fill(0);
        for r in 0..rows {
            // SAFETY: the caller may read `bytes` bytes at each row (the `TileOps` contract).
            let src = unsafe { std::slice::from_raw_parts(ptr.add(r * stride), bytes) };
            self.tiles[t][r * ROW_BYTES..r * ROW_BYTES + bytes].copy_from_slice(src);
        }
    }
    unsafe fn store(&mut self, t: usize, ptr: *mut u8, stride: usize) {
        let (rows, bytes) = self.shape(t);
        for r in 0..rows {
            // SAFETY: the caller may write `bytes` bytes at each row.
            let dst = unsafe { std::slice::from_raw_parts_mut(ptr.add(r * stride), bytes) };
            dst.copy_from_slice(&self.tiles[t][r * ROW_BYTES..r * ROW_BYTES + bytes]);
        }
    }
    unsafe fn dot(&mut self, c: usize, a: usize, b: usize) {
        let (m, c_bytes) = self.shape(c);
        let (_, a_bytes) = self.shape(a);
        let (n, k) = (c_bytes / 4, a_bytes / 4);
        for r in 0..m {
            for col in 0..n {
                let mut acc = self.f32_at(c, r, col);
                for p in 0..k {
                    let even = self.bf16_at(a, r, 2 * p) * self.bf16_at(b, p, 2 * col);
                    let odd = self.bf16_at(a, r, 2 * p + 1) * self.bf16_at(b, p, 2 * col + 1);
                    acc = add_ftz(add_ftz(acc, even), odd);
                }
                let o = r * ROW_BYTES + 4 * col;
                self.tiles[c][o..o + 4].copy_from_slice(&acc.to_le_bytes());
            }
        }
    }
    unsafe fn release(&mut self) {
        self.cfg = None;
        for t in self.tiles.iter_mut() {
            t.fill(0);
        }
    }
}

/// bf16 x bf16 -> f32 on the model.
///
/// # Safety
///
/// As [`crate::abi::BrgemmFn`].
unsafe fn model_f32(p: &Params, batch: &BatchPtrs<'_, bf16>, c: *mut f32) {
    // SAFETY: forwarded; the model needs no CPU feature.
    unsafe { super::tiles::brgemm(&mut Model::new(), p, batch, c) }
}

/// bf16 x bf16 -> bf16 on the model.
///
/// # Safety
///
/// As [`crate::abi::BrgemmFn`].
unsafe fn model_bf16(p: &Params, batch: &BatchPtrs<'_, bf16>, c: *mut bf16) {
    // SAFETY: forwarded; the model needs no CPU feature.
    unsafe { super::tiles::brgemm(&mut Model::new(), p, batch, c) }
}

/// The tile BRGEMM on the model: every backend's table offers it (for tests).
pub(crate) const MODEL: Bf16Brgemm = Bf16Brgemm {
    to_f32: model_f32,
    to_bf16: model_bf16,
};
