//! Instruction-set detection, cached once per process, with an override for tests and
//! comparisons.
//!
//! The best ISA the CPU supports is detected on first use. The environment variable
//! [`ISA_ENV_VAR`] (`DLRM_ISA=portable|avx512|avx512bf16`) selects a *lower* one, which is how
//! tests and benchmarks reach every code path on one machine, and how a user compares paths.

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use crate::KernelError;

/// Name of the environment variable that forces a lower ISA.
pub const ISA_ENV_VAR: &str = "DLRM_ISA";

/// An instruction set a kernel can be built for, ordered from least to most capable.
///
/// ```
/// use dlrm_microkernels::Isa;
///
/// // Portable code runs everywhere; the best ISA is at least that.
/// assert!(Isa::Portable.is_available());
/// assert!(Isa::best() >= Isa::Portable);
/// assert_eq!("avx512".parse::<Isa>().unwrap(), Isa::Avx512);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Isa {
    /// Plain Rust, no explicit SIMD; any CPU.
    Portable,
    /// AVX-512 F, BW, VL and DQ (Skylake-SP and later, AMD Zen 4 and later): fp32 FMA on zmm;
    /// bf16 data is widened to fp32 in registers.
    Avx512,
    /// AVX-512 plus AVX512-BF16 (`vdpbf16ps`, Cooper Lake, Sapphire Rapids, Zen 4).
    Avx512Bf16,
}

impl Isa {
    /// All ISAs, least capable first.
    pub const ALL: [Isa; 3] = [Isa::Portable, Isa::Avx512, Isa::Avx512Bf16];

    /// The lower-case name used by [`ISA_ENV_VAR`] and [`FromStr`].
    ///
    /// ```
    /// assert_eq!(dlrm_microkernels::Isa::Avx512Bf16.name(), "avx512bf16");
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            Isa::Portable => "portable",
            Isa::Avx512 => "avx512",
            Isa::Avx512Bf16 => "avx512bf16",
        }
    }

    /// The best ISA this CPU supports (detected once, then cached).
    ///
    /// ```
    /// let best = dlrm_microkernels::Isa::best();
    /// assert!(best.is_available());
    /// ```
    pub fn best() -> Isa {
        static BEST: OnceLock<Isa> = OnceLock::new();
        *BEST.get_or_init(detect)
    }

    /// Whether this CPU can run kernels built for `self`.
    ///
    /// ```
    /// assert!(dlrm_microkernels::Isa::Portable.is_available());
    /// ```
    pub fn is_available(self) -> bool {
        self <= Isa::best()
    }

    /// Every ISA this CPU can run, least capable first (always starts with `Portable`).
    ///
    /// ```
    /// let isas = dlrm_microkernels::Isa::available();
    /// assert_eq!(isas[0], dlrm_microkernels::Isa::Portable);
    /// ```
    pub fn available() -> Vec<Isa> {
        Isa::ALL.into_iter().filter(|i| i.is_available()).collect()
    }

    /// The ISA kernels use by default: [`Isa::best`], or the one named by [`ISA_ENV_VAR`].
    ///
    /// Read once and cached.
    ///
    /// # Errors
    ///
    /// [`KernelError::UnknownIsa`] if the variable names no ISA, and
    /// [`KernelError::IsaUnavailable`] if it names one this CPU lacks.
    ///
    /// ```
    /// let isa = dlrm_microkernels::Isa::active()?;
    /// assert!(isa.is_available());
    /// # Ok::<(), dlrm_microkernels::KernelError>(())
    /// ```
    pub fn active() -> Result<Isa, KernelError> {
        static ACTIVE: OnceLock<Result<Isa, KernelError>> = OnceLock::new();
        ACTIVE
            .get_or_init(|| {
                let var = std::env::var(ISA_ENV_VAR).ok();
                resolve(var.as_deref(), Isa::best())
            })
            .clone()
    }

    /// `Ok(self)` if this CPU can run it.
    ///
    /// # Errors
    ///
    /// [`KernelError::IsaUnavailable`], naming the best ISA available instead.
    ///
    /// ```
    /// use dlrm_microkernels::Isa;
    /// assert_eq!(Isa::Portable.require(), Ok(Isa::Portable));
    /// ```
    pub fn require(self) -> Result<Isa, KernelError> {
        if self.is_available() {
            Ok(self)
        } else {
            Err(KernelError::IsaUnavailable {
                requested: self,
                best: Isa::best(),
            })
        }
    }
}

/// Resolve an optional request (the value of [`ISA_ENV_VAR`]) against the best available ISA.
///
/// An empty or absent request means `best`. This is the pure part of [`Isa::active`], exposed
/// so the rule can be tested without touching the process environment.
///
/// # Errors
///
/// [`KernelError::UnknownIsa`] for an unknown name; [`KernelError::IsaUnavailable`] for an ISA
/// above `best`.
///
/// ```
/// use dlrm_microkernels::{isa::resolve, Isa, KernelError};
///
/// assert_eq!(resolve(None, Isa::Avx512), Ok(Isa::Avx512));
/// assert_eq!(resolve(Some("portable"), Isa::Avx512), Ok(Isa::Portable));
/// assert!(matches!(
///     resolve(Some("avx512bf16"), Isa::Avx512),
///     Err(KernelError::IsaUnavailable { best: Isa::Avx512, .. })
/// ));
/// ```
pub fn resolve(request: Option<&str>, best: Isa) -> Result<Isa, KernelError> {
    match request.map(str::trim) {
        None | Some("") => Ok(best),
        Some(s) => {
            let isa: Isa = s.parse()?;
            if isa <= best {
                Ok(isa)
            } else {
                Err(KernelError::IsaUnavailable {
                    requested: isa,
                    best,
                })
            }
        }
    }
}

impl FromStr for Isa {
    type Err = KernelError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
        Isa::ALL
            .into_iter()
            .find(|i| i.name() == lower)
            .ok_or_else(|| KernelError::UnknownIsa {
                value: s.to_string(),
            })
    }
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(target_arch = "x86_64")]
fn detect() -> Isa {
    let avx512 = std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512vl")
        && std::arch::is_x86_feature_detected!("avx512dq");
    if !avx512 {
        Isa::Portable
    } else if std::arch::is_x86_feature_detected!("avx512bf16") {
        Isa::Avx512Bf16
    } else {
        Isa::Avx512
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn detect() -> Isa {
    Isa::Portable
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_is_case_insensitive_and_rejects_unknown() {
        assert_eq!(" AVX512BF16 ".parse::<Isa>(), Ok(Isa::Avx512Bf16));
        let err = "sse2".parse::<Isa>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown ISA \"sse2\": expected one of portable, avx512, avx512bf16"
        );
    }

    #[test]
    fn resolve_forces_lower_and_refuses_higher() {
        assert_eq!(resolve(Some(""), Isa::Avx512Bf16), Ok(Isa::Avx512Bf16));
        assert_eq!(resolve(Some("avx512"), Isa::Avx512Bf16), Ok(Isa::Avx512));
        let err = resolve(Some("avx512"), Isa::Portable).unwrap_err();
        assert_eq!(
            err.to_string(),
            "ISA avx512 is not available on this CPU (best available: portable)"
        );
        assert!(matches!(
            resolve(Some("avx2"), Isa::Avx512Bf16),
            Err(KernelError::UnknownIsa { .. })
        ));
    }

    #[test]
    fn available_is_a_prefix_of_all() {
        let av = Isa::available();
        assert_eq!(av[..], Isa::ALL[..av.len()]);
        assert_eq!(*av.last().unwrap(), Isa::best());
    }
}
