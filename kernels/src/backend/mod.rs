//! Kernel backends: one module per instruction set, each filling one dispatch table
//! ([`Backend`]) with every operation the crate needs.
//!
//! | module | [`Isa`] | what it adds |
//! |---|---|---|
//! | `portable` | `Portable` | plain Rust, any CPU; the definition every other backend matches |
//! | `x86` | (shared) | the bodies written once against a register type (`Vector`): BRGEMM tiles, embedding bags, conversions, pair dots |
//! | `avx2` | `Avx2` | ymm kernels for everything (16-bit edges through the stack); bf16 GEMMs widen to fp32 |
//! | `avx512` | `Avx512` | zmm kernels for everything; bf16 GEMMs widen to fp32 |
//! | `avx512bf16` | `Avx512Bf16` | `avx512`'s entries, plus bf16 GEMMs on `vdpbf16ps` |
//! | `amx` | `Amx` | `avx512bf16`'s entries, plus bf16 GEMMs on AMX tiles (and a software model of the tiles every table offers, for tests) |
//!
//! The API modules validate a call, then run the entry of the table chosen when their kernel
//! was built; nothing outside this directory tests which ISA is in use. A backend's table may
//! name another backend's function for an entry (written out entry by entry).
//!
//! # Adding a backend
//!
//! 1. Add the variant to [`Isa`] with the [`crate::cpu::Features`] it needs.
//! 2. Write `backend/<name>.rs` (or a directory): a `pub(crate) static BACKEND: Backend`
//!    with every entry filled, reusing the shared x86 tile body through a `Vector` impl or
//!    another backend's entries where they fit.
//! 3. Add its line to [`get`], and its CPU rows to [`crate::tuning`] if it has choices.
//! 4. The property tests run every available backend (`Isa::available`).

use crate::abi::{ApplyFn, Bf16Brgemm, BrgemmFn, EltwiseFns, PeakLoop, PoolFn};
use crate::{Isa, KernelError, RegisterTile};

pub(crate) mod amx;
pub(crate) mod portable;

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2;
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512;
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512bf16;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86;

use half::bf16;

/// The dispatch table of one backend: every operation, and what the backend's register
/// tiles can be.
///
/// Every entry is an `unsafe fn` whose contract is: the CPU has the backend's features (true
/// for any table returned by [`get`]), and the arguments describe accesses the API checked.
pub(crate) struct Backend {
    /// Which backend this is.
    pub isa: Isa,
    /// f32 lanes per vector register (1 for portable).
    pub lanes: usize,
    /// The largest register tile the BRGEMM body supports, per data type; the tuning table
    /// picks one at most this size.
    pub max_tile_f32: RegisterTile,
    pub max_tile_bf16: RegisterTile,
    /// The most accumulators a tile may hold (the register file's size less the B vectors
    /// and broadcasts a k step needs).
    pub max_accumulators: usize,
    /// Preferred block size of the blocked MLP (rows, input and output features), and the
    /// widest input taken as one block.
    pub block: usize,
    pub whole_input_max: usize,

    // BRGEMM bodies.
    pub brgemm_f32: BrgemmFn<f32, f32>,
    /// bf16 widened to fp32 and multiplied with FMAs (every backend has it).
    pub brgemm_bf16_widen: Bf16Brgemm,
    /// bf16 pairs on a dot-product instruction (`vdpbf16ps`), where the CPU has one.
    pub brgemm_bf16_dot: Option<Bf16Brgemm>,
    /// bf16 on AMX tile registers, where the CPU has them.
    pub brgemm_bf16_tiles: Option<Bf16Brgemm>,
    /// The same tile body on the software model of the tile instructions (every backend:
    /// it needs no CPU feature; for tests).
    pub brgemm_bf16_tiles_model: Bf16Brgemm,

    // Conversions and Split-SGD (lengths equal).
    pub f32_to_bf16: unsafe fn(&[f32], &mut [bf16]),
    pub bf16_to_f32: unsafe fn(&[bf16], &mut [f32]),
    pub split_f32: unsafe fn(&[f32], &mut [bf16], &mut [u16]),
    pub join_f32: unsafe fn(&[bf16], &[u16], &mut [f32]),
    pub sgd: unsafe fn(&mut [f32], &[f32], f32),
    pub split_sgd: unsafe fn(&mut [bf16], &mut [u16], &[f32], f32),

    // Reorders of `rows x cols` (or `k x n`) matrices of 32- and 16-bit values; `src` and
    // `dst` hold what the operation reads and writes.
    pub transpose32: unsafe fn(*const u32, usize, usize, *mut u32),
    pub transpose16: unsafe fn(*const u16, usize, usize, *mut u16),
    pub pack_pairs32: unsafe fn(*const u32, usize, usize, *mut u32),
    pub pack_pairs16: unsafe fn(*const u16, usize, usize, *mut u16),
    pub unpack_pairs32: unsafe fn(*const u32, usize, usize, *mut u32),
    pub unpack_pairs16: unsafe fn(*const u16, usize, usize, *mut u16),

    // Embedding bags.
    pub pool: PoolFn,
    pub apply: ApplyFn,

    // Pairwise dots of `f` rows of `d` floats: forward into the pairs, backward from the
    // pairs' gradient (`grad` holds every pair) into `dz`.
    pub pair_dots_forward: unsafe fn(*const f32, usize, usize, bool, *mut f32),
    pub pair_dots_backward: unsafe fn(*const f32, usize, usize, bool, &[f32], *mut f32),

    /// Sort and drop repeats in place; returns the number kept.
    pub sort_unique: unsafe fn(&mut [u32]) -> usize,

    /// Element-wise epilogues of the MLP.
    pub eltwise: EltwiseFns,

    // Peak loops (None where the backend has no such instruction).
    pub fma_peak: Option<PeakLoop>,
    pub bf16_dot_peak: Option<PeakLoop>,
    pub tile_peak: Option<PeakLoop>,
}

/// The table of `isa`.
///
/// # Errors
///
/// [`KernelError::IsaUnavailable`] when this CPU cannot run it: a table is only ever handed
/// out for a backend the CPU runs, which is what makes its entries safe to call.
pub(crate) fn get(isa: Isa) -> Result<&'static Backend, KernelError> {
    isa.require()?;
    Ok(match isa {
        Isa::Portable => &portable::BACKEND,
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => &avx2::BACKEND,
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => &avx512::BACKEND,
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Bf16 => &avx512bf16::BACKEND,
        #[cfg(target_arch = "x86_64")]
        Isa::Amx => &amx::BACKEND,
        #[cfg(not(target_arch = "x86_64"))]
        Isa::Avx2 | Isa::Avx512 | Isa::Avx512Bf16 | Isa::Amx => {
            unreachable!("`require` refuses x86 backends here")
        }
    })
}

/// The table of the active backend ([`Isa::active`]).
///
/// # Errors
///
/// Those of [`Isa::active`].
pub(crate) fn active() -> Result<&'static Backend, KernelError> {
    get(Isa::active()?)
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Backend({})", self.isa)
    }
}

impl Backend {
    /// The bf16 BRGEMM bodies for a way of multiplying, if this backend has it.
    pub(crate) fn bf16_body(&self, path: crate::tuning::Bf16Gemm) -> Option<Bf16Brgemm> {
        use crate::tuning::Bf16Gemm;
        match path {
            Bf16Gemm::Dot => self.brgemm_bf16_dot,
            Bf16Gemm::Widen => Some(self.brgemm_bf16_widen),
            Bf16Gemm::Tiles => self.brgemm_bf16_tiles,
            Bf16Gemm::TilesModel => Some(self.brgemm_bf16_tiles_model),
        }
    }
}

/// One table per backend: tables are equal when their backends are.
impl PartialEq for Backend {
    fn eq(&self, other: &Self) -> bool {
        self.isa == other.isa
    }
}

impl Eq for Backend {}
