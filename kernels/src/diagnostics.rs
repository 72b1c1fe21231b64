//! What the kernels will run on this machine, in words: the CPU, the backends it can run, the
//! one in use and why, and the per-CPU choices ([`crate::tuning`]). The trainer prints this
//! first; benchmarks print it with their results.
//!
//! ```
//! let d = dlrm_microkernels::diagnostics::Diagnostics::get();
//! let text = d.to_string();
//! assert!(text.contains("backend"));
//! println!("{text}");
//! ```

use std::fmt;

use crate::cpu::Cpu;
use crate::isa::ISA_ENV_VAR;
use crate::tuning::{BF16_GEMM_ENV_VAR, Bf16Source, Tuning};
use crate::{Isa, KernelError};

/// A snapshot of the kernel configuration.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Diagnostics {
    /// The CPU.
    pub cpu: &'static Cpu,
    /// Backends this CPU runs, in [`Isa::ALL`] order.
    pub available: Vec<Isa>,
    /// The value of [`ISA_ENV_VAR`], if set.
    pub requested: Option<String>,
    /// The backend in use, or why none could be chosen.
    pub active: Result<Isa, KernelError>,
    /// The per-CPU choices for the backend in use (or why they could not be made).
    pub tuning: Result<Tuning, KernelError>,
    /// Whether this process may use AMX tiles, where the CPU has them (`None`: no AMX).
    pub amx: Option<Result<(), String>>,
}

impl Diagnostics {
    /// Collect the current configuration.
    ///
    /// ```
    /// let d = dlrm_microkernels::diagnostics::Diagnostics::get();
    /// assert!(d.available.contains(&dlrm_microkernels::Isa::Portable));
    /// ```
    pub fn get() -> Diagnostics {
        let active = Isa::active();
        Diagnostics {
            cpu: Cpu::get(),
            available: Isa::available(),
            requested: std::env::var(ISA_ENV_VAR)
                .ok()
                .filter(|v| !v.trim().is_empty()),
            tuning: active.clone().and_then(Tuning::for_backend),
            active,
            amx: Cpu::get()
                .features
                .contains(Isa::Amx.needs())
                .then(crate::sys::amx::permission),
        }
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = self.cpu;
        writeln!(
            f,
            "CPU: {} ({:?}, family {:#x}, model {:#x}); features: {}",
            c.name, c.vendor, c.family, c.model, c.features
        )?;
        let names: Vec<&str> = self.available.iter().map(|i| i.name()).collect();
        let why = match &self.requested {
            Some(v) => format!("{ISA_ENV_VAR}={v}"),
            None => format!("the best available; {ISA_ENV_VAR} selects another"),
        };
        if let Some(Err(why)) = &self.amx {
            writeln!(f, "AMX: not used ({why})")?;
        }
        match &self.active {
            Ok(isa) => writeln!(
                f,
                "kernel backend: {isa} ({why}); available: {}",
                names.join(" ")
            )?,
            Err(e) => writeln!(
                f,
                "kernel backend: none ({e}); available: {}",
                names.join(" ")
            )?,
        }
        match &self.tuning {
            Ok(t) => {
                let source = match t.bf16_source {
                    Bf16Source::Table => "CPU table",
                    Bf16Source::Environment => BF16_GEMM_ENV_VAR,
                    Bf16Source::OnlyWay => "the backend's only way",
                };
                write!(
                    f,
                    "tuning: {}; fp32 register tile {}x{} vectors, {}; bf16 GEMM: {} \
                     ({source}), tile {}x{}",
                    t.core,
                    t.f32_tile.rows,
                    t.f32_tile.cols,
                    if t.pair_outer {
                        "batch pairs outer"
                    } else {
                        "tiles outer"
                    },
                    t.bf16_gemm,
                    t.bf16_tile.rows,
                    t.bf16_tile.cols
                )
            }
            Err(e) => write!(f, "tuning: unavailable ({e})"),
        }
    }
}
