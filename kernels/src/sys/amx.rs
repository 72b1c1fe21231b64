//! Asking Linux for the AMX tile state.
//!
//! A CPU with AMX (CPUID) whose OS saves tile state (XCR0) still refuses the tile
//! instructions to a process until it asks: Linux keeps the 8 KiB tile data state off by
//! default and enables it per process with `arch_prctl(ARCH_REQ_XCOMP_PERM,
//! XFEATURE_XTILEDATA)`. [`permission`] asks once per process and caches the answer; the
//! `amx` backend is available only when it was granted.
//!
//! ```
//! match dlrm_microkernels::sys::amx::permission() {
//!     Ok(()) => println!("AMX tiles granted"),
//!     Err(why) => println!("no AMX: {why}"),
//! }
//! ```

use std::sync::OnceLock;

/// `arch_prctl` code that requests permission for an extended state component.
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
const ARCH_REQ_XCOMP_PERM: libc::c_ulong = 0x1023;
/// The AMX tile data state component.
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
const XFEATURE_XTILEDATA: libc::c_ulong = 18;

/// Whether this process may use the AMX tile registers, asking the OS on the first call.
///
/// # Errors
///
/// Why not, in words: the CPU or OS lacks AMX, or the OS refused the request (with its
/// error), or the platform has no such request (not Linux on x86-64).
pub fn permission() -> Result<(), String> {
    static ANSWER: OnceLock<Result<(), String>> = OnceLock::new();
    ANSWER.get_or_init(request).clone()
}

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
fn request() -> Result<(), String> {
    use crate::cpu::{Cpu, Features};

    let needed = Features::AMX_TILE | Features::AMX_BF16;
    let have = Cpu::get().features;
    if !have.contains(needed) {
        return Err(format!(
            "the CPU or OS lacks {} (CPUID and XCR0)",
            have.missing(needed)
        ));
    }
    // SAFETY: `arch_prctl(ARCH_REQ_XCOMP_PERM, n)` takes two integers, reads and writes no
    // memory of ours, and only changes which register state the kernel saves for us.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(format!(
            "Linux refused the AMX tile state (arch_prctl ARCH_REQ_XCOMP_PERM: {})",
            std::io::Error::last_os_error()
        ))
    }
}

#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
fn request() -> Result<(), String> {
    Err("AMX tiles are only requested on Linux x86-64".into())
}
