//! The kernel backends by name, which of them this CPU can run, and the one in use.
//!
//! Each [`Isa`] names one backend module (`backend/<name>`) and the [`Features`] it needs. A
//! backend is available when the CPU (and the operating system) has all of them; there is no
//! order between backends beyond a preference for the default. The backend used by default is
//! the most preferred available one ([`Isa::best`]), unless the environment variable
//! [`ISA_ENV_VAR`] (`DLRM_ISA=portable|avx2|avx512|avx512bf16|amx`) names another available one: that
//! is how tests and benchmarks reach every code path on one machine, and how a user compares
//! paths.

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use crate::KernelError;
use crate::cpu::{Cpu, Features};

/// Name of the environment variable that selects a backend.
pub const ISA_ENV_VAR: &str = "DLRM_ISA";

/// A kernel backend: one module of kernels written for one instruction set.
///
/// ```
/// use dlrm_microkernels::Isa;
///
/// // Portable code runs everywhere; the best backend is available by definition.
/// assert!(Isa::Portable.is_available());
/// assert!(Isa::best().is_available());
/// assert_eq!("avx512".parse::<Isa>().unwrap(), Isa::Avx512);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Isa {
    /// Plain Rust, no explicit SIMD; any CPU.
    Portable,
    /// AVX2, FMA and F16C (Intel Haswell and later, AMD Zen and later): fp32 FMA on ymm; bf16
    /// data is widened to fp32 in registers.
    Avx2,
    /// AVX-512 F, BW, VL and DQ (Skylake-SP and later, AMD Zen 4 and later): fp32 FMA on zmm;
    /// bf16 data is widened to fp32 in registers.
    Avx512,
    /// AVX-512 plus AVX512-BF16 (`vdpbf16ps`; Cooper Lake, Sapphire Rapids, Zen 4).
    Avx512Bf16,
    /// AVX512-BF16 plus AMX tiles (`tdpbf16ps`; Sapphire Rapids and later), where Linux
    /// grants this process the tile state ([`crate::sys::amx`]): bf16 GEMMs on tile
    /// registers, everything else as `avx512bf16`.
    Amx,
}

impl Isa {
    /// Every backend, in the order of preference for the default (most preferred last).
    pub const ALL: [Isa; 5] = [
        Isa::Portable,
        Isa::Avx2,
        Isa::Avx512,
        Isa::Avx512Bf16,
        Isa::Amx,
    ];

    /// The lower-case name used by [`ISA_ENV_VAR`] and [`FromStr`].
    ///
    /// ```
    /// assert_eq!(dlrm_microkernels::Isa::Avx512Bf16.name(), "avx512bf16");
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            Isa::Portable => "portable",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Avx512Bf16 => "avx512bf16",
            Isa::Amx => "amx",
        }
    }

    /// The CPU features this backend needs.
    ///
    /// ```
    /// use dlrm_microkernels::{Isa, cpu::Features};
    /// assert!(Isa::Portable.needs().is_empty());
    /// assert!(Isa::Avx512Bf16.needs().contains(Features::AVX512BF16));
    /// assert_eq!(Isa::Avx2.needs(), Features::AVX2 | Features::FMA | Features::F16C);
    /// ```
    pub fn needs(self) -> Features {
        let avx512 =
            Features::AVX512F | Features::AVX512BW | Features::AVX512VL | Features::AVX512DQ;
        match self {
            Isa::Portable => Features::empty(),
            Isa::Avx2 => Features::AVX2 | Features::FMA | Features::F16C,
            Isa::Avx512 => avx512,
            Isa::Avx512Bf16 => avx512 | Features::AVX512BF16,
            Isa::Amx => avx512 | Features::AVX512BF16 | Features::AMX_TILE | Features::AMX_BF16,
        }
    }

    /// Whether a CPU with `features` can run this backend.
    ///
    /// ```
    /// use dlrm_microkernels::{Isa, cpu::Features};
    /// assert!(Isa::Portable.runs_on(Features::empty()));
    /// assert!(!Isa::Avx512.runs_on(Features::AVX2 | Features::FMA));
    /// ```
    pub fn runs_on(self, features: Features) -> bool {
        features.contains(self.needs())
    }

    /// The most preferred backend this CPU can run (detected once, then cached).
    ///
    /// ```
    /// let best = dlrm_microkernels::Isa::best();
    /// assert!(best.is_available());
    /// ```
    pub fn best() -> Isa {
        static BEST: OnceLock<Isa> = OnceLock::new();
        *BEST.get_or_init(|| best_for(usable_features()))
    }

    /// Whether this CPU can run this backend.
    ///
    /// ```
    /// assert!(dlrm_microkernels::Isa::Portable.is_available());
    /// ```
    pub fn is_available(self) -> bool {
        self.runs_on(usable_features())
    }

    /// Every backend this CPU can run, in [`Isa::ALL`] order (always starts with `Portable`).
    ///
    /// ```
    /// let isas = dlrm_microkernels::Isa::available();
    /// assert_eq!(isas[0], dlrm_microkernels::Isa::Portable);
    /// ```
    pub fn available() -> Vec<Isa> {
        Isa::ALL.into_iter().filter(|i| i.is_available()).collect()
    }

    /// The backend kernels use by default: [`Isa::best`], or the one named by
    /// [`ISA_ENV_VAR`].
    ///
    /// Read once and cached.
    ///
    /// # Errors
    ///
    /// [`KernelError::UnknownIsa`] if the variable names no backend, and
    /// [`KernelError::IsaUnavailable`] if it names one this CPU cannot run.
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
                resolve(var.as_deref(), usable_features()).map_err(refine)
            })
            .clone()
    }

    /// `Ok(self)` if this CPU can run it.
    ///
    /// # Errors
    ///
    /// [`KernelError::IsaUnavailable`], naming the missing features and the best backend
    /// available instead.
    ///
    /// ```
    /// use dlrm_microkernels::Isa;
    /// assert_eq!(Isa::Portable.require(), Ok(Isa::Portable));
    /// ```
    pub fn require(self) -> Result<Isa, KernelError> {
        check(self, usable_features()).map_err(refine)
    }
}

/// An unavailable backend that the CPU has but the OS refused (AMX), with the OS's reason.
fn refine(e: KernelError) -> KernelError {
    match e {
        KernelError::IsaUnavailable { requested, .. }
            if Cpu::get().features.contains(requested.needs()) =>
        {
            KernelError::IsaRefused {
                requested,
                reason: crate::sys::amx::permission()
                    .err()
                    .unwrap_or_else(|| "refused by the operating system".into()),
            }
        }
        e => e,
    }
}

/// The CPU's features less the AMX ones when Linux refuses this process the tile state
/// (asked once, on first use: see [`crate::sys::amx::permission`]).
pub(crate) fn usable_features() -> Features {
    static USABLE: OnceLock<Features> = OnceLock::new();
    *USABLE.get_or_init(|| {
        let f = Cpu::get().features;
        let amx = Features::AMX_TILE | Features::AMX_BF16;
        usable(f, !f.contains(amx) || crate::sys::amx::permission().is_ok())
    })
}

/// `features` less the AMX ones unless the tile state is granted.
fn usable(features: Features, amx_granted: bool) -> Features {
    let amx = Features::AMX_TILE | Features::AMX_BF16;
    if amx_granted {
        features
    } else {
        Features::from_bits(features.bits() & !amx.bits())
    }
}

/// The most preferred backend a CPU with `features` runs.
fn best_for(features: Features) -> Isa {
    Isa::ALL
        .into_iter()
        .rev()
        .find(|i| i.runs_on(features))
        .unwrap_or(Isa::Portable)
}

fn check(isa: Isa, features: Features) -> Result<Isa, KernelError> {
    if isa.runs_on(features) {
        Ok(isa)
    } else {
        Err(KernelError::IsaUnavailable {
            requested: isa,
            missing: features.missing(isa.needs()),
            best: best_for(features),
        })
    }
}

/// Resolve an optional request (the value of [`ISA_ENV_VAR`]) on a CPU with `features`.
///
/// An empty or absent request means the most preferred backend such a CPU runs. This is the
/// pure part of [`Isa::active`], exposed so the rule can be tested without touching the
/// process environment or depending on the CPU.
///
/// # Errors
///
/// [`KernelError::UnknownIsa`] for an unknown name; [`KernelError::IsaUnavailable`] for a
/// backend that needs features the CPU lacks.
///
/// ```
/// use dlrm_microkernels::{cpu::Features, isa::resolve, Isa, KernelError};
///
/// let avx512 = Isa::Avx512.needs();
/// assert_eq!(resolve(None, avx512), Ok(Isa::Avx512));
/// assert_eq!(resolve(Some("portable"), avx512), Ok(Isa::Portable));
/// assert!(matches!(
///     resolve(Some("avx512bf16"), avx512),
///     Err(KernelError::IsaUnavailable { best: Isa::Avx512, missing, .. })
///         if missing == Features::AVX512BF16
/// ));
/// ```
pub fn resolve(request: Option<&str>, features: Features) -> Result<Isa, KernelError> {
    match request.map(str::trim) {
        None | Some("") => Ok(best_for(features)),
        Some(s) => check(s.parse()?, features),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_is_case_insensitive_and_rejects_unknown() {
        assert_eq!(" AVX512BF16 ".parse::<Isa>(), Ok(Isa::Avx512Bf16));
        let err = "sse2".parse::<Isa>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown ISA \"sse2\": expected one of portable, avx2, avx512, avx512bf16, amx"
        );
    }

    #[test]
    fn resolve_picks_any_runnable_backend_and_refuses_the_rest() {
        let all = Isa::Avx512Bf16.needs();
        assert_eq!(resolve(Some(""), all), Ok(Isa::Avx512Bf16));
        assert_eq!(resolve(Some("avx512"), all), Ok(Isa::Avx512));
        let err = resolve(Some("avx512"), Features::AVX2).unwrap_err();
        assert_eq!(
            err.to_string(),
            "ISA avx512 is not available on this CPU (it lacks avx512f avx512bw avx512vl \
             avx512dq; best available: portable)"
        );
        // AVX2 needs FMA and F16C too; with them it is the best an AVX2 CPU runs.
        let avx2 = Features::AVX2 | Features::FMA | Features::F16C;
        assert_eq!(resolve(None, avx2), Ok(Isa::Avx2));
        assert_eq!(
            resolve(None, Features::AVX2 | Features::FMA),
            Ok(Isa::Portable)
        );
        assert_eq!(resolve(None, all | avx2), Ok(Isa::Avx512Bf16));
        assert!(matches!(
            resolve(Some("sse9"), all),
            Err(KernelError::UnknownIsa { .. })
        ));
    }

    #[test]
    fn a_refused_tile_state_leaves_the_next_backend() {
        let cpu = Isa::Amx.needs();
        assert_eq!(best_for(usable(cpu, true)), Isa::Amx);
        let refused = usable(cpu, false);
        assert_eq!(best_for(refused), Isa::Avx512Bf16);
        assert!(matches!(
            resolve(Some("amx"), refused),
            Err(KernelError::IsaUnavailable {
                requested: Isa::Amx,
                ..
            })
        ));
    }

    #[test]
    fn available_backends_are_exactly_those_whose_features_the_cpu_has() {
        let av = Isa::available();
        assert_eq!(av[0], Isa::Portable);
        for isa in Isa::ALL {
            assert_eq!(av.contains(&isa), usable_features().contains(isa.needs()));
        }
        assert!(av.contains(&Isa::best()));
    }
}
