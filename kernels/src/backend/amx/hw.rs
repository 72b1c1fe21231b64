//! The tile instructions on the hardware, written with `asm!` (stable Rust has no AMX
//! intrinsics yet). Tile register numbers are matched to the instruction's encoding; the
//! matches fold away where the body's loops are unrolled.

use core::arch::asm;

use super::tiles::{TileConfig, TileOps};

/// The AMX unit of this core.
pub(crate) struct Hw;

/// Expands `$body` with `$t` replaced by the literal tile register named by `$n` (0 to 7).
macro_rules! on_tile {
    ($n:expr, $m:ident => $body:expr) => {
        match $n {
            0 => {
                macro_rules! $m {
                    () => {
                        "tmm0"
                    };
                }
                $body
            }
            1 => {
                macro_rules! $m {
                    () => {
                        "tmm1"
                    };
                }
                $body
            }
            2 => {
                macro_rules! $m {
                    () => {
                        "tmm2"
                    };
                }
                $body
            }
            3 => {
                macro_rules! $m {
                    () => {
                        "tmm3"
                    };
                }
                $body
            }
            4 => {
                macro_rules! $m {
                    () => {
                        "tmm4"
                    };
                }
                $body
            }
            5 => {
                macro_rules! $m {
                    () => {
                        "tmm5"
                    };
                }
                $body
            }
            6 => {
                macro_rules! $m {
                    () => {
                        "tmm6"
                    };
                }
                $body
            }
            7 => {
                macro_rules! $m {
                    () => {
                        "tmm7"
                    };
                }
                $body
            }
            _ => unreachable!("tile registers are 0 to 7"),
        }
    };
}

impl TileOps for Hw {
    #[inline(always)]
    unsafe fn configure(&mut self, cfg: &TileConfig) {
        // SAFETY: `cfg` is a valid, 64-byte aligned palette-1 configuration; the process
        // holds the tile permission (the backend is only handed out then).
        unsafe { asm!("ldtilecfg [{}]", in(reg) cfg, options(nostack, readonly)) };
    }
    #[inline(always)]
    unsafe fn zero(&mut self, t: usize) {
        // SAFETY: tiles are configured (caller); register-only.
        on_tile!(t, tmm => unsafe { asm!(concat!("tilezero ", tmm!()), options(nostack, nomem)) })
    }
    #[inline(always)]
    unsafe fn load(&mut self, t: usize, ptr: *const u8, stride: usize) {
        // SAFETY: the configured rows of `stride` bytes apart, each of the configured bytes,
        // lie inside memory the caller may read.
        on_tile!(t, tmm => unsafe {
            asm!(
                concat!("tileloadd ", tmm!(), ", [{p} + {s}*1]"),
                p = in(reg) ptr,
                s = in(reg) stride,
                options(nostack, readonly)
            )
        })
    }
    #[inline(always)]
    unsafe fn store(&mut self, t: usize, ptr: *mut u8, stride: usize) {
        // SAFETY: as `load`, for memory the caller may write.
        on_tile!(t, tmm => unsafe {
            asm!(
                concat!("tilestored [{p} + {s}*1], ", tmm!()),
                p = in(reg) ptr,
                s = in(reg) stride,
                options(nostack)
            )
        })
    }
    #[inline(always)]
    unsafe fn dot(&mut self, c: usize, a: usize, b: usize) {
        // SAFETY: tiles are configured (caller); register-only. The body uses C tiles 0 to
        // 3 with A tiles 4, 5 and B tiles 6, 7 only.
        unsafe {
            match (c, a, b) {
                (0, 4, 6) => asm!("tdpbf16ps tmm0, tmm4, tmm6", options(nostack, nomem)),
                (1, 4, 7) => asm!("tdpbf16ps tmm1, tmm4, tmm7", options(nostack, nomem)),
                (2, 5, 6) => asm!("tdpbf16ps tmm2, tmm5, tmm6", options(nostack, nomem)),
                (3, 5, 7) => asm!("tdpbf16ps tmm3, tmm5, tmm7", options(nostack, nomem)),
                _ => unreachable!("tile triple outside the 2 x 2 block"),
            }
        }
    }
    #[inline(always)]
    unsafe fn release(&mut self) {
        // SAFETY: releases this thread's tile state; nothing uses tiles after it.
        unsafe { asm!("tilerelease", options(nostack, nomem)) };
    }
}

/// `iterations` rounds of four independent `tdpbf16ps` (C tiles 0 to 3) on operands already
/// in tiles: the AMX peak loop.
///
/// # Safety
///
/// AMX is granted to this process.
pub(crate) unsafe fn peak(iterations: u64) -> f32 {
    let mut ops = Hw;
    let cfg = TileConfig::full();
    let zeros = [0u8; 1024];
    // SAFETY: the tile permission (caller); tiles are configured before use and released
    // after; the operand tiles are loaded from a 1 KiB buffer.
    unsafe {
        ops.configure(&cfg);
        for t in 0..8 {
            ops.load(t, zeros.as_ptr(), 64);
        }
        for _ in 0..iterations {
            ops.dot(0, 4, 6);
            ops.dot(1, 4, 7);
            ops.dot(2, 5, 6);
            ops.dot(3, 5, 7);
        }
        let mut out = [0f32; 256];
        ops.store(0, out.as_mut_ptr().cast(), 64);
        ops.release();
        out[0]
    }
}
