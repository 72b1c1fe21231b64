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

use crate::{Isa, KernelError};

/// Which instruction to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Peak {
    /// `vfmadd231ps zmm`: 32 FLOP per instruction.
    Fp32Fma,
    /// `vdpbf16ps zmm`: 64 FLOP per instruction.
    Bf16Dot,
}

/// Independent accumulators per loop iteration.
const CHAINS: u64 = 12;

impl Peak {
    /// The ISA the loop needs.
    ///
    /// ```
    /// use dlrm_microkernels::{peak::Peak, Isa};
    /// assert_eq!(Peak::Bf16Dot.isa(), Isa::Avx512Bf16);
    /// ```
    pub fn isa(self) -> Isa {
        match self {
            Peak::Fp32Fma => Isa::Avx512,
            Peak::Bf16Dot => Isa::Avx512Bf16,
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
        match self {
            Peak::Fp32Fma => CHAINS * 32,
            Peak::Bf16Dot => CHAINS * 64,
        }
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
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: the required ISA was checked available just above.
        let sink = unsafe {
            match peak {
                Peak::Fp32Fma => x86::fma_loop(iterations),
                Peak::Bf16Dot => x86::dpbf16_loop(iterations),
            }
        };
        std::hint::black_box(sink);
    }
    Ok(iterations * peak.flops_per_iteration())
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use core::arch::x86_64::*;

    use super::CHAINS;

    const N: usize = CHAINS as usize;

    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn fma_loop(iterations: u64) -> f32 {
        let x = std::hint::black_box(_mm512_set1_ps(1e-3));
        let mut acc = [_mm512_setzero_ps(); N];
        for _ in 0..iterations {
            for a in acc.iter_mut() {
                *a = _mm512_fmadd_ps(x, x, *a);
            }
        }
        acc.iter().map(|&a| _mm512_reduce_add_ps(a)).sum()
    }

    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn dpbf16_loop(iterations: u64) -> f32 {
        let x = std::hint::black_box(_mm512_cvtne2ps_pbh(
            _mm512_set1_ps(1e-3),
            _mm512_set1_ps(1e-3),
        ));
        let mut acc = [_mm512_setzero_ps(); N];
        for _ in 0..iterations {
            for a in acc.iter_mut() {
                *a = _mm512_dpbf16_ps(*a, x, x);
            }
        }
        acc.iter().map(|&a| _mm512_reduce_add_ps(a)).sum()
    }
}
