//! Per-CPU choices made when a kernel is built: the BRGEMM register tile and batch loop
//! order, and how bf16 GEMMs multiply where the backend offers more than one way.
//!
//! Both come from a fixed table keyed by CPU vendor, family and model ([`Tuning::for_cpu`]),
//! never from a timing taken at run time, so a result never depends on how busy the machine
//! was when the kernel was built. The register tile and the loop order do not change any result
//! (every element of C sums its products in the same order either way); the bf16 path does (a
//! `vdpbf16ps` sum rounds differently from two FMAs), which is why it can be forced with
//! [`BF16_GEMM_ENV_VAR`].
//!
//! | CPU | fp32 tile | batch loop | bf16 GEMM |
//! |---|---|---|---|
//! | Intel Xeon, Sapphire Rapids and later (two 512-bit FMA ports; `vdpbf16ps` at half the fp32 FMA rate; told by model, or by AMX where a virtual machine hides the model) | 13 x 2 zmm | pairs outer | widen to fp32 |
//! | Intel Xeon, Skylake-SP to Ice Lake (two 512-bit FMA ports) | 13 x 2 zmm | pairs outer | `vdpbf16ps` where present |
//! | AMD Zen 4 / Zen 5, anything else | 6 x 4 zmm | tiles outer | `vdpbf16ps` where present |
//!
//! The `avx2` backend takes a 6 x 2 ymm tile on every CPU (its 16 registers hold 12
//! accumulators, the 2 B vectors, a broadcast and a lane mask), the batch loop of the CPU's
//! row, and widens bf16 (4 x 2 ymm).
//!
//! ```
//! use dlrm_microkernels::{tuning::Tuning, Isa};
//!
//! let t = Tuning::for_backend(Isa::active()?)?;
//! println!("fp32 tile {:?}, bf16 GEMM {} ({})", t.f32_tile, t.bf16_gemm, t.core);
//! # Ok::<(), dlrm_microkernels::KernelError>(())
//! ```

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use crate::cpu::{Cpu, Features, Vendor};
use crate::{Isa, KernelError, RegisterTile, backend};

/// Name of the environment variable that forces the bf16 GEMM path (`dot` or `widen`).
pub const BF16_GEMM_ENV_VAR: &str = "DLRM_BF16_GEMM";

/// How a bf16 GEMM multiplies (bf16 storage, and Split-SGD, are the same either way).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bf16Gemm {
    /// A bf16 dot-product instruction on VNNI pairs (`vdpbf16ps`): one instruction per pair.
    Dot,
    /// Each bf16 widened to fp32 (a shift) and multiplied with fp32 FMAs: two per pair.
    Widen,
    /// AMX tile registers (`tdpbf16ps`, 16 x 16 x 32 per instruction; the `amx` backend).
    Tiles,
    /// The tile body on a software model of the tile instructions: slow, any CPU; for tests.
    TilesModel,
}

impl Bf16Gemm {
    /// The lower-case name used by [`BF16_GEMM_ENV_VAR`].
    ///
    /// ```
    /// assert_eq!(dlrm_microkernels::tuning::Bf16Gemm::Widen.name(), "widen");
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            Bf16Gemm::Dot => "dot",
            Bf16Gemm::Widen => "widen",
            Bf16Gemm::Tiles => "tiles",
            Bf16Gemm::TilesModel => "tiles-model",
        }
    }
}

impl fmt::Display for Bf16Gemm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Bf16Gemm {
    type Err = KernelError;

    fn from_str(s: &str) -> Result<Self, KernelError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "dot" => Ok(Bf16Gemm::Dot),
            "widen" => Ok(Bf16Gemm::Widen),
            "tiles" => Ok(Bf16Gemm::Tiles),
            "tiles-model" => Ok(Bf16Gemm::TilesModel),
            _ => Err(KernelError::UnknownSetting {
                variable: BF16_GEMM_ENV_VAR,
                value: s.to_string(),
                expected: "dot, widen, tiles, tiles-model",
            }),
        }
    }
}

/// One row of the CPU table. A row applies when the vendor and family match and either the
/// model is listed or the CPU has the row's telling features (virtual machines often report
/// a model number that is not the host's; a feature such as AMX still tells the core).
struct Row {
    /// What the row covers, for diagnostics.
    core: &'static str,
    vendor: Vendor,
    family: u32,
    /// Display models the row covers.
    models: &'static [u32],
    /// Features that identify the row's cores whatever model is reported (empty: none).
    telling: Features,
    f32_tile: RegisterTile,
    bf16_gemm: Bf16Gemm,
    pair_outer: bool,
}

/// Sapphire Rapids (0x8f), Emerald Rapids (0xcf), Granite Rapids (0xad, 0xae).
const INTEL_SPR_AND_LATER: &[u32] = &[0x8f, 0xcf, 0xad, 0xae];
/// Skylake-SP / Cascade Lake / Cooper Lake (0x55), Ice Lake-SP (0x6a, 0x6c).
const INTEL_SKX_TO_ICX: &[u32] = &[0x55, 0x6a, 0x6c];

/// The tile for cores with two 512-bit FMA ports: 26 accumulators in 2 columns, so a k step
/// loads 2 zmm of B for 13 broadcasts (zmm loads cost FMA issue slots there, broadcasts
/// hardly), and 64 rows split 13 + 13 + 13 + 13 + 12. Measured on a Sapphire Rapids core
/// (64 x 64 x 64 x 16): 13 x 2 and 6 x 4 within 2% of each other, 8 x 3 6% slower.
const TWO_PORT_TILE: RegisterTile = RegisterTile { rows: 13, cols: 2 };
/// The tile for everything else (Zen 4's one 512-bit FMA pipe): 24 accumulators, 4 columns.
const DEFAULT_TILE: RegisterTile = RegisterTile { rows: 6, cols: 4 };
/// The tile of the `avx2` backend on every CPU (16 ymm registers): 12 accumulators in 2
/// columns; with the 2 B vectors, a broadcast and a lane mask they fill the register file.
const YMM_TILE: RegisterTile = RegisterTile { rows: 6, cols: 2 };

const TABLE: &[Row] = &[
    Row {
        core: "Intel Xeon, Sapphire Rapids or later: two 512-bit FMA ports, vdpbf16ps at half \
               the fp32 FMA rate",
        vendor: Vendor::Intel,
        family: 6,
        models: INTEL_SPR_AND_LATER,
        telling: Features::AMX_TILE,
        f32_tile: TWO_PORT_TILE,
        bf16_gemm: Bf16Gemm::Widen,
        pair_outer: true,
    },
    Row {
        core: "Intel Xeon, Skylake-SP to Ice Lake: two 512-bit FMA ports",
        vendor: Vendor::Intel,
        family: 6,
        models: INTEL_SKX_TO_ICX,
        telling: Features::empty(),
        f32_tile: TWO_PORT_TILE,
        bf16_gemm: Bf16Gemm::Dot,
        pair_outer: true,
    },
];

/// The row for CPUs the table does not name (AMD Zen 4 and Zen 5 among them).
const DEFAULT_ROW: Row = Row {
    core: "default (AMD Zen 4 and others): one 512-bit FMA pipe",
    vendor: Vendor::Other,
    family: 0,
    models: &[],
    telling: Features::empty(),
    f32_tile: DEFAULT_TILE,
    bf16_gemm: Bf16Gemm::Dot,
    pair_outer: false,
};

/// Why the bf16 path is what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bf16Source {
    /// The CPU table's choice.
    Table,
    /// Forced by [`BF16_GEMM_ENV_VAR`].
    Environment,
    /// The backend has only this way.
    OnlyWay,
}

/// The choices for one backend on this CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Tuning {
    /// The backend.
    pub isa: Isa,
    /// Which row of the CPU table applies.
    pub core: &'static str,
    /// The largest fp32 BRGEMM register tile.
    pub f32_tile: RegisterTile,
    /// How bf16 GEMMs multiply.
    pub bf16_gemm: Bf16Gemm,
    /// Why.
    pub bf16_source: Bf16Source,
    /// The largest bf16 BRGEMM register tile (for the chosen path).
    pub bf16_tile: RegisterTile,
    /// Whether f32-output BRGEMMs run the batch as the outer loop (C carrying the sum in L1
    /// between pairs, each pair's B read once from L2) rather than keeping each tile in
    /// registers across the batch (every tile streams all of B). Cores with two FMA ports
    /// consume B faster than L2 streams it; the result is the same either way.
    pub pair_outer: bool,
    /// f32 lanes per vector register of the backend (1 for portable).
    pub lanes: usize,
    /// The block size the backend's kernels prefer for the blocked MLP (rows of the batch,
    /// input and output features).
    pub block: usize,
    /// Inputs up to this width are taken as one block (the BRGEMM's reduced dimension serves
    /// any length; padding a width such as 100 to two blocks would waste work).
    pub whole_input_max: usize,
}

impl Tuning {
    /// The choices for `isa` on this CPU, with [`BF16_GEMM_ENV_VAR`] applied (read once).
    ///
    /// # Errors
    ///
    /// [`KernelError::IsaUnavailable`] for a backend this CPU cannot run;
    /// [`KernelError::UnknownSetting`] when the variable is neither `dot` nor `widen`;
    /// [`KernelError::Unsupported`] when it asks for `dot` on a backend without a bf16
    /// dot-product instruction.
    ///
    /// ```
    /// use dlrm_microkernels::{tuning::{Bf16Gemm, Tuning}, Isa};
    /// // The portable backend always widens.
    /// # if std::env::var("DLRM_BF16_GEMM").map_or(true, |v| v != "dot") {
    /// assert_eq!(Tuning::for_backend(Isa::Portable)?.bf16_gemm, Bf16Gemm::Widen);
    /// # }
    /// # Ok::<(), dlrm_microkernels::KernelError>(())
    /// ```
    pub fn for_backend(isa: Isa) -> Result<Tuning, KernelError> {
        let table = backend::get(isa)?;
        let forced = forced_bf16()?;
        let cpu = Cpu::get();
        let t = Tuning::for_cpu(isa, cpu.vendor, cpu.family, cpu.model, cpu.features);
        let (bf16_gemm, bf16_source) = match forced {
            Some(g) if table.bf16_body(g).is_none() => {
                return Err(KernelError::Unsupported {
                    what: "a DLRM_BF16_GEMM path this backend lacks (dot needs avx512bf16, \
                           tiles needs amx; widen and tiles-model run everywhere)",
                });
            }
            Some(g) => (g, Bf16Source::Environment),
            // Tiles where the backend has them; else, with a dot-product instruction, the
            // CPU table's choice between it and widening; else widening.
            None if table.brgemm_bf16_tiles.is_some() => (Bf16Gemm::Tiles, Bf16Source::Table),
            None if table.brgemm_bf16_dot.is_some() => (t.bf16_gemm, Bf16Source::Table),
            None => (Bf16Gemm::Widen, Bf16Source::OnlyWay),
        };
        let bf16_tile = match bf16_gemm {
            Bf16Gemm::Dot | Bf16Gemm::Tiles | Bf16Gemm::TilesModel => t.f32_tile,
            // Two registers per widened B vector: fewer accumulators fit.
            Bf16Gemm::Widen => RegisterTile {
                rows: (20 / t.f32_tile.cols).min(t.f32_tile.rows),
                cols: t.f32_tile.cols,
            },
        };
        Ok(Tuning {
            bf16_gemm,
            bf16_source,
            bf16_tile: clamp(bf16_tile, table.max_tile_bf16),
            f32_tile: clamp(t.f32_tile, table.max_tile_f32),
            lanes: table.lanes,
            block: table.block,
            whole_input_max: table.whole_input_max,
            ..t
        })
    }

    /// The peak loop a kernel of this input type is measured against: the instruction its
    /// BRGEMM runs on (the fp32 FMA loop for f32 and for widened bf16, `vdpbf16ps` for the
    /// dot path, `tdpbf16ps` for tiles; the ymm FMA loop on the `avx2` backend).
    ///
    /// ```
    /// use dlrm_microkernels::{peak::Peak, tuning::Tuning, DType, Isa};
    /// let t = Tuning::for_backend(Isa::active()?)?;
    /// assert_eq!(t.peak(DType::F32), Peak::Fp32Fma);
    /// # Ok::<(), dlrm_microkernels::KernelError>(())
    /// ```
    pub fn peak(&self, input: crate::DType) -> crate::peak::Peak {
        use crate::peak::Peak;
        match (input, self.bf16_gemm) {
            (crate::DType::Bf16, Bf16Gemm::Tiles) => Peak::AmxTiles,
            (crate::DType::Bf16, Bf16Gemm::Dot) => Peak::Bf16Dot,
            _ if self.isa == Isa::Avx2 => Peak::Fp32Fma256,
            _ => Peak::Fp32Fma,
        }
    }

    /// The CPU table's choices for `isa` on a CPU of this vendor, family and model, before
    /// the environment and the backend's limits are applied (pure: for tests and
    /// documentation).
    ///
    /// ```
    /// use dlrm_microkernels::cpu::{Features, Vendor};
    /// use dlrm_microkernels::{tuning::{Bf16Gemm, Tuning}, Isa, RegisterTile};
    ///
    /// let none = Features::empty();
    /// let spr = Tuning::for_cpu(Isa::Avx512Bf16, Vendor::Intel, 6, 0x8f, none);
    /// assert_eq!(spr.bf16_gemm, Bf16Gemm::Widen);
    /// assert_eq!(spr.f32_tile, RegisterTile { rows: 13, cols: 2 });
    /// // A virtual machine reporting another model: AMX still tells the core.
    /// let vm = Tuning::for_cpu(Isa::Avx512Bf16, Vendor::Intel, 6, 0xa7, Features::AMX_TILE);
    /// assert_eq!(vm.core, spr.core);
    /// let zen4 = Tuning::for_cpu(Isa::Avx512Bf16, Vendor::Amd, 0x19, 0x11, none);
    /// assert_eq!(zen4.bf16_gemm, Bf16Gemm::Dot);
    /// assert_eq!(zen4.f32_tile, RegisterTile { rows: 6, cols: 4 });
    /// ```
    pub fn for_cpu(
        isa: Isa,
        vendor: Vendor,
        family: u32,
        model: u32,
        features: Features,
    ) -> Tuning {
        let row = TABLE
            .iter()
            .find(|r| {
                r.vendor == vendor
                    && r.family == family
                    && (r.models.contains(&model)
                        || (!r.telling.is_empty() && features.contains(r.telling)))
            })
            .unwrap_or(&DEFAULT_ROW);
        let f32_tile = match isa {
            Isa::Avx2 => YMM_TILE,
            _ => row.f32_tile,
        };
        Tuning {
            isa,
            core: row.core,
            f32_tile,
            bf16_gemm: row.bf16_gemm,
            bf16_source: Bf16Source::Table,
            bf16_tile: f32_tile,
            pair_outer: row.pair_outer,
            lanes: 16,
            block: 64,
            whole_input_max: 128,
        }
    }
}

/// Choices to make instead of the CPU table's, for one kernel
/// ([`crate::Brgemm::with_overrides`]).
///
/// ```
/// use dlrm_microkernels::tuning::{Bf16Gemm, Overrides};
/// let o = Overrides { bf16_gemm: Some(Bf16Gemm::Dot), ..Overrides::default() };
/// assert!(o.tile.is_none());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Overrides {
    /// The largest register tile.
    pub tile: Option<RegisterTile>,
    /// How bf16 GEMMs multiply.
    pub bf16_gemm: Option<Bf16Gemm>,
    /// The batch loop order (see [`Tuning::pair_outer`]).
    pub pair_outer: Option<bool>,
}

/// A tile no larger than `max` in either direction.
fn clamp(t: RegisterTile, max: RegisterTile) -> RegisterTile {
    RegisterTile {
        rows: t.rows.min(max.rows),
        cols: t.cols.min(max.cols),
    }
}

/// The bf16 path forced by [`BF16_GEMM_ENV_VAR`], if any (read once).
fn forced_bf16() -> Result<Option<Bf16Gemm>, KernelError> {
    static FORCED: OnceLock<Result<Option<Bf16Gemm>, KernelError>> = OnceLock::new();
    FORCED
        .get_or_init(|| match std::env::var(BF16_GEMM_ENV_VAR) {
            Ok(v) if !v.trim().is_empty() => v.parse().map(Some),
            _ => Ok(None),
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_intel_xeon_row_uses_the_two_port_tile_and_others_the_default() {
        for m in INTEL_SPR_AND_LATER.iter().chain(INTEL_SKX_TO_ICX) {
            let t = Tuning::for_cpu(Isa::Avx512, Vendor::Intel, 6, *m, Features::empty());
            assert_eq!(t.f32_tile, TWO_PORT_TILE, "model {m:#x}");
        }
        for (v, f, m) in [
            (Vendor::Amd, 0x19, 0x11),
            (Vendor::Intel, 6, 0x97),
            (Vendor::Other, 0, 0),
        ] {
            let t = Tuning::for_cpu(Isa::Avx512, v, f, m, Features::AVX512F);
            assert_eq!(t.f32_tile, DEFAULT_TILE);
        }
    }

    #[test]
    fn avx2_takes_the_ymm_tile_on_every_cpu() {
        for (v, f, m) in [
            (Vendor::Intel, 6, 0x8f),
            (Vendor::Amd, 0x17, 0x31),
            (Vendor::Other, 0, 0),
        ] {
            let t = Tuning::for_cpu(Isa::Avx2, v, f, m, Features::AVX2);
            assert_eq!(t.f32_tile, YMM_TILE);
        }
    }

    #[test]
    fn settings_parse_and_unknown_ones_name_the_variable() {
        assert_eq!(" DOT ".parse::<Bf16Gemm>(), Ok(Bf16Gemm::Dot));
        let err = "fast".parse::<Bf16Gemm>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "DLRM_BF16_GEMM=\"fast\" is not a known setting (expected one of: dot, widen, tiles, \
             tiles-model)"
        );
    }

    #[test]
    fn tiles_fit_the_backend() {
        for isa in Isa::available() {
            let t = Tuning::for_backend(isa).unwrap();
            let b = backend::get(isa).unwrap();
            assert!(
                t.f32_tile.rows <= b.max_tile_f32.rows && t.f32_tile.cols <= b.max_tile_f32.cols
            );
            assert!(t.bf16_tile.rows <= b.max_tile_bf16.rows);
            assert!(t.bf16_tile.accumulators() <= b.max_accumulators);
        }
    }
}
