//! What this CPU is and what it can do: vendor, family and model, and the set of instruction
//! set features that both the CPU (CPUID) and the operating system (XCR0: which register
//! states it saves) support. Read once per process.
//!
//! Backends ([`crate::Isa`]) say which [`Features`] they need; a backend is available when
//! this CPU has all of them. There is no order between backends: a CPU may have AVX-512
//! without AVX512-BF16, or AMX tiles that the operating system has not enabled.
//!
//! ```
//! use dlrm_microkernels::cpu::{Cpu, Features};
//!
//! let cpu = Cpu::get();
//! println!("{} ({:?}, family {:#x}, model {:#x})", cpu.name, cpu.vendor, cpu.family, cpu.model);
//! println!("features: {}", cpu.features);
//! // Every x86-64 CPU has at least SSE2; other architectures report no x86 features.
//! assert!(cpu.features.contains(Features::empty()));
//! ```

use std::fmt;
use std::sync::OnceLock;

/// Who made the CPU (CPUID leaf 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Vendor {
    /// `GenuineIntel`.
    Intel,
    /// `AuthenticAMD`.
    Amd,
    /// Any other vendor string, or a CPU that is not x86-64.
    Other,
}

/// A set of instruction-set features, each supported by the CPU *and* enabled by the
/// operating system.
///
/// ```
/// use dlrm_microkernels::cpu::Features;
///
/// let f = Features::AVX2 | Features::FMA;
/// assert!(f.contains(Features::AVX2));
/// assert!(!f.contains(Features::AVX2 | Features::AVX512F));
/// assert_eq!(f.missing(Features::AVX2 | Features::F16C), Features::F16C);
/// assert_eq!(f.to_string(), "avx2 fma");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Features(u32);

macro_rules! features {
    ($( $(#[$doc:meta])* $name:ident = $bit:expr, $text:literal; )*) => {
        impl Features {
            $( $(#[$doc])* pub const $name: Features = Features(1 << $bit); )*
            const NAMES: &'static [(Features, &'static str)] = &[$( (Features::$name, $text), )*];
        }
    };
}

features! {
    /// AVX2 (256-bit integer SIMD), with the OS saving ymm state.
    AVX2 = 0, "avx2";
    /// FMA3 (fused multiply-add).
    FMA = 1, "fma";
    /// F16C (half-precision conversions).
    F16C = 2, "f16c";
    /// AVX-512 Foundation, with the OS saving zmm and mask state.
    AVX512F = 3, "avx512f";
    /// AVX-512 byte and word instructions.
    AVX512BW = 4, "avx512bw";
    /// AVX-512 vector-length extensions (the 128- and 256-bit forms).
    AVX512VL = 5, "avx512vl";
    /// AVX-512 doubleword and quadword instructions.
    AVX512DQ = 6, "avx512dq";
    /// AVX512-BF16 (`vdpbf16ps`, `vcvtne2ps2bf16`).
    AVX512BF16 = 7, "avx512bf16";
    /// AMX tile registers (`ldtilecfg`, `tileloadd`, ...), with the OS enabling tile state in
    /// XCR0. Linux additionally asks each process to request the tile data state before use
    /// ([`crate::sys::amx`]).
    AMX_TILE = 8, "amx-tile";
    /// AMX bf16 tile multiply (`tdpbf16ps`).
    AMX_BF16 = 9, "amx-bf16";
}

impl Features {
    /// The set as a bit mask (for storing it; the bit positions are not a stable format).
    ///
    /// ```
    /// use dlrm_microkernels::cpu::Features;
    /// assert_eq!(Features::from_bits(Features::AVX2.bits()), Features::AVX2);
    /// ```
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// The set of a bit mask from [`Features::bits`].
    ///
    /// ```
    /// assert!(dlrm_microkernels::cpu::Features::from_bits(0).is_empty());
    /// ```
    pub const fn from_bits(bits: u32) -> Features {
        Features(bits)
    }

    /// No features.
    ///
    /// ```
    /// assert!(dlrm_microkernels::cpu::Features::empty().is_empty());
    /// ```
    pub const fn empty() -> Features {
        Features(0)
    }

    /// Whether no feature is in the set.
    ///
    /// ```
    /// assert!(!dlrm_microkernels::cpu::Features::AVX2.is_empty());
    /// ```
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Whether every feature of `other` is in `self`.
    ///
    /// ```
    /// use dlrm_microkernels::cpu::Features;
    /// assert!((Features::AVX2 | Features::FMA).contains(Features::FMA));
    /// ```
    pub const fn contains(self, other: Features) -> bool {
        self.0 & other.0 == other.0
    }

    /// The features of `needed` that `self` lacks.
    ///
    /// ```
    /// use dlrm_microkernels::cpu::Features;
    /// assert_eq!(Features::AVX2.missing(Features::AVX2 | Features::FMA), Features::FMA);
    /// ```
    pub const fn missing(self, needed: Features) -> Features {
        Features(needed.0 & !self.0)
    }

    /// The union of two sets (also `|`).
    ///
    /// ```
    /// use dlrm_microkernels::cpu::Features;
    /// assert_eq!(Features::AVX2.union(Features::FMA), Features::AVX2 | Features::FMA);
    /// ```
    pub const fn union(self, other: Features) -> Features {
        Features(self.0 | other.0)
    }

    /// The names of the features in the set, in a fixed order.
    ///
    /// ```
    /// use dlrm_microkernels::cpu::Features;
    /// let names: Vec<_> = (Features::FMA | Features::AVX2).names().collect();
    /// assert_eq!(names, ["avx2", "fma"]);
    /// ```
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        Features::NAMES
            .iter()
            .filter(move |(f, _)| self.contains(*f))
            .map(|(_, n)| *n)
    }
}

impl std::ops::BitOr for Features {
    type Output = Features;
    fn bitor(self, rhs: Features) -> Features {
        self.union(rhs)
    }
}

impl fmt::Display for Features {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("(none)");
        }
        for (i, n) in self.names().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            f.write_str(n)?;
        }
        Ok(())
    }
}

impl fmt::Debug for Features {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Features({self})")
    }
}

/// This CPU, as CPUID and XCR0 describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Cpu {
    /// The vendor.
    pub vendor: Vendor,
    /// Display family (base family plus extended family), e.g. 6 for Intel Core and Xeon,
    /// 0x19 for AMD Zen 3 and Zen 4.
    pub family: u32,
    /// Display model (base model plus extended model), e.g. 0x8f for Sapphire Rapids.
    pub model: u32,
    /// The processor brand string, trimmed (`"unknown"` where there is none).
    pub name: String,
    /// Features the CPU has and the OS has enabled.
    pub features: Features,
}

impl Cpu {
    /// This CPU (detected on first use, then cached).
    ///
    /// ```
    /// let cpu = dlrm_microkernels::cpu::Cpu::get();
    /// assert!(!cpu.name.is_empty());
    /// ```
    pub fn get() -> &'static Cpu {
        static CPU: OnceLock<Cpu> = OnceLock::new();
        CPU.get_or_init(detect)
    }
}

#[cfg(target_arch = "x86_64")]
fn detect() -> Cpu {
    use core::arch::x86_64::__cpuid_count;

    let leaf0 = __cpuid_count(0, 0);
    let max_leaf = leaf0.eax;
    let mut vendor_bytes = [0u8; 12];
    vendor_bytes[..4].copy_from_slice(&leaf0.ebx.to_le_bytes());
    vendor_bytes[4..8].copy_from_slice(&leaf0.edx.to_le_bytes());
    vendor_bytes[8..].copy_from_slice(&leaf0.ecx.to_le_bytes());
    let vendor = match &vendor_bytes {
        b"GenuineIntel" => Vendor::Intel,
        b"AuthenticAMD" => Vendor::Amd,
        _ => Vendor::Other,
    };
    let leaf1 = __cpuid_count(1, 0);
    let base_family = (leaf1.eax >> 8) & 0xf;
    let base_model = (leaf1.eax >> 4) & 0xf;
    let family = if base_family == 0xf {
        base_family + ((leaf1.eax >> 20) & 0xff)
    } else {
        base_family
    };
    let model = if base_family == 0x6 || base_family == 0xf {
        base_model | (((leaf1.eax >> 16) & 0xf) << 4)
    } else {
        base_model
    };
    let bit = |reg: u32, b: u32| reg & (1 << b) != 0;
    let (fma, osxsave, avx, f16c) = (
        bit(leaf1.ecx, 12),
        bit(leaf1.ecx, 27),
        bit(leaf1.ecx, 28),
        bit(leaf1.ecx, 29),
    );
    // XCR0: which register states the OS saves and restores on a context switch.
    let xcr0 = if osxsave { read_xcr0() } else { 0 };
    let os_ymm = xcr0 & 0b110 == 0b110;
    let os_zmm = os_ymm && xcr0 & 0b1110_0000 == 0b1110_0000;
    let os_tiles = xcr0 & (0b11 << 17) == 0b11 << 17;
    let (b7, d7, a7_1) = if max_leaf >= 7 {
        let l7 = __cpuid_count(7, 0);
        let a71 = if l7.eax >= 1 {
            __cpuid_count(7, 1).eax
        } else {
            0
        };
        (l7.ebx, l7.edx, a71)
    } else {
        (0, 0, 0)
    };
    let mut f = Features::empty();
    let mut set = |cond: bool, feat: Features| {
        if cond {
            f = f | feat;
        }
    };
    set(avx && os_ymm && bit(b7, 5), Features::AVX2);
    set(avx && os_ymm && fma, Features::FMA);
    set(avx && os_ymm && f16c, Features::F16C);
    set(os_zmm && bit(b7, 16), Features::AVX512F);
    set(os_zmm && bit(b7, 30), Features::AVX512BW);
    set(os_zmm && bit(b7, 31), Features::AVX512VL);
    set(os_zmm && bit(b7, 17), Features::AVX512DQ);
    set(os_zmm && bit(a7_1, 5), Features::AVX512BF16);
    set(os_tiles && bit(d7, 24), Features::AMX_TILE);
    set(os_tiles && bit(d7, 22), Features::AMX_BF16);
    Cpu {
        vendor,
        family,
        model,
        name: brand_string(),
        features: f,
    }
}

/// XCR0, the enabled-state mask.
#[cfg(target_arch = "x86_64")]
fn read_xcr0() -> u64 {
    #[target_feature(enable = "xsave")]
    unsafe fn xgetbv0() -> u64 {
        // SAFETY: `xgetbv` with ECX = 0 reads XCR0; the caller checked OSXSAVE, which says
        // the OS has enabled the instruction.
        unsafe { core::arch::x86_64::_xgetbv(0) }
    }
    // SAFETY: only called when CPUID reports OSXSAVE (XSAVE supported and enabled by the OS).
    unsafe { xgetbv0() }
}

#[cfg(target_arch = "x86_64")]
fn brand_string() -> String {
    use core::arch::x86_64::__cpuid_count;

    if __cpuid_count(0x8000_0000, 0).eax < 0x8000_0004 {
        return "unknown".into();
    }
    let mut bytes = Vec::with_capacity(48);
    for leaf in 0x8000_0002..=0x8000_0004u32 {
        let r = __cpuid_count(leaf, 0);
        for reg in [r.eax, r.ebx, r.ecx, r.edx] {
            bytes.extend_from_slice(&reg.to_le_bytes());
        }
    }
    let s = String::from_utf8_lossy(&bytes);
    let s = s.trim_matches(|c: char| c == '\0' || c.is_whitespace());
    if s.is_empty() {
        "unknown".into()
    } else {
        s.to_string()
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn detect() -> Cpu {
    Cpu {
        vendor: Vendor::Other,
        family: 0,
        model: 0,
        name: "unknown".into(),
        features: Features::empty(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detection_agrees_with_the_standard_library() {
        #[cfg(target_arch = "x86_64")]
        {
            let f = Cpu::get().features;
            assert_eq!(
                f.contains(Features::AVX2),
                std::arch::is_x86_feature_detected!("avx2")
            );
            assert_eq!(
                f.contains(Features::FMA),
                std::arch::is_x86_feature_detected!("fma")
            );
            assert_eq!(
                f.contains(Features::AVX512F),
                std::arch::is_x86_feature_detected!("avx512f")
            );
            assert_eq!(
                f.contains(Features::AVX512BW | Features::AVX512VL | Features::AVX512DQ),
                std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512vl")
                    && std::arch::is_x86_feature_detected!("avx512dq")
            );
            assert_eq!(
                f.contains(Features::AVX512BF16),
                std::arch::is_x86_feature_detected!("avx512bf16")
            );
        }
    }

    #[test]
    fn sets_print_in_a_fixed_order() {
        let f = Features::AMX_BF16 | Features::AVX2 | Features::AVX512F;
        assert_eq!(f.to_string(), "avx2 avx512f amx-bf16");
        assert_eq!(Features::empty().to_string(), "(none)");
    }
}
