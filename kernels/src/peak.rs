//! Measure the machine's arithmetic peak, so benchmarks can report a kernel as a fraction of
//! what the same core reaches in the same run.
//!
//! Each loop keeps many independent accumulators in registers (more than FMA latency times
//! throughput needs) and does nothing but the instruction being measured.
//!
//! ```
//! use dlrm_microkernels::peak::{Peak, run};
//! # if !Peak::Fp32Fma.is_available() { return Ok(()); }
//! let flops = run(Peak::Fp32Fma, 1000)?;
//! assert_eq!(flops, 1000 * Peak::Fp32Fma.flops_per_iteration());
//! # Ok::<(), dlrm_microkernels::KernelError>(())
//! ```

use crate::abi::PeakLoop;
use crate::backend::{self, Backend};
use crate::{Isa, KernelError};

/// Which instruction to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Peak {
    /// `vfmadd231ps ymm` (AVX2 + FMA): 16 FLOP per instruction.
    Fp32Fma256,
    /// `vfmadd231ps zmm`: 32 FLOP per instruction.
    Fp32Fma,
    /// `vdpbf16ps zmm`: 64 FLOP per instruction.
    Bf16Dot,
    /// `tdpbf16ps` on 16 x 16 x 32 tiles already loaded: 16,384 FLOP per instruction.
    AmxTiles,
}

impl Peak {
    /// Every loop.
    pub const ALL: [Peak; 4] = [
        Peak::Fp32Fma256,
        Peak::Fp32Fma,
        Peak::Bf16Dot,
        Peak::AmxTiles,
    ];

    /// A short name (`fp32_fma256`, `fp32_fma`, `bf16_dot`, `amx_tiles`), for reports.
    ///
    /// ```
    /// assert_eq!(dlrm_microkernels::peak::Peak::AmxTiles.name(), "amx_tiles");
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            Peak::Fp32Fma256 => "fp32_fma256",
            Peak::Fp32Fma => "fp32_fma",
            Peak::Bf16Dot => "bf16_dot",
            Peak::AmxTiles => "amx_tiles",
        }
    }

    /// The ISA the loop needs.
    ///
    /// ```
    /// use dlrm_microkernels::{peak::Peak, Isa};
    /// assert_eq!(Peak::Bf16Dot.isa(), Isa::Avx512Bf16);
    /// assert_eq!(Peak::Fp32Fma256.isa(), Isa::Avx2);
    /// ```
    pub fn isa(self) -> Isa {
        match self {
            Peak::Fp32Fma256 => Isa::Avx2,
            Peak::Fp32Fma => Isa::Avx512,
            Peak::Bf16Dot => Isa::Avx512Bf16,
            Peak::AmxTiles => Isa::Amx,
        }
    }

    /// Whether this CPU can run the loop.
    ///
    /// ```
    /// let _ = dlrm_microkernels::peak::Peak::Fp32Fma.is_available();
    /// ```
    pub fn is_available(self) -> bool {
        self.isa().is_available()
    }

    /// Floating-point operations one iteration performs.
    ///
    /// ```
    /// assert_eq!(dlrm_microkernels::peak::Peak::Fp32Fma.flops_per_iteration(), 12 * 32);
    /// ```
    pub fn flops_per_iteration(self) -> u64 {
        self.table_loop().map_or(0, |l| l.flops_per_iteration)
    }

    /// The loop in its backend's table (None where this CPU lacks the backend).
    fn table_loop(self) -> Option<PeakLoop> {
        let entry = |t: &Backend| match self {
            Peak::Fp32Fma256 | Peak::Fp32Fma => t.fma_peak,
            Peak::Bf16Dot => t.bf16_dot_peak,
            Peak::AmxTiles => t.tile_peak,
        };
        backend::get(self.isa()).ok().and_then(entry)
    }
}

/// Run `iterations` iterations of the peak loop; returns the floating-point operations done.
/// Time it to get FLOP/s.
///
/// # Errors
///
/// [`KernelError::IsaUnavailable`] if this CPU lacks the instruction.
///
/// ```
/// use dlrm_microkernels::peak::{Peak, run};
/// match run(Peak::Bf16Dot, 10) {
///     Ok(flops) => assert_eq!(flops, 10 * 12 * 64),
///     Err(e) => println!("{e}"),
/// }
/// ```
pub fn run(peak: Peak, iterations: u64) -> Result<u64, KernelError> {
    peak.isa().require()?;
    let l = peak.table_loop().ok_or(KernelError::Unsupported {
        what: "a peak loop its backend does not have",
    })?;
    // SAFETY: the loop comes from the table of a backend this CPU runs.
    let sink = unsafe { (l.run)(iterations) };
    std::hint::black_box(sink);
    Ok(iterations * l.flops_per_iteration)
}
