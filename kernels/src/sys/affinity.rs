//! Pinning threads to CPUs (Linux `sched_setaffinity`).
//!
//! A worker that the scheduler moves to another core leaves its L1 and L2 behind: the
//! operand panels a GEMM task was reusing, the rows an embedding update had prefetched.
//! `dlrm_kernels::threads::pool` pins a pool's workers with it. Systems other than Linux
//! report [`io::ErrorKind::Unsupported`].
//!
//! ```
//! use dlrm_microkernels::affinity;
//! match affinity::allowed_cpus() {
//!     Ok(cpus) => {
//!         assert!(!cpus.is_empty());
//!         // Pin a fresh thread to the first CPU we may use; it stays allowed there.
//!         std::thread::spawn(move || {
//!             affinity::pin_current_thread(cpus[0]).unwrap();
//!             assert_eq!(affinity::allowed_cpus().unwrap(), vec![cpus[0]]);
//!         })
//!         .join()
//!         .unwrap();
//!     }
//!     Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::Unsupported),
//! }
//! ```

use std::io;

/// The CPUs the calling thread may run on, ascending. A new thread inherits its creator's
/// set, so on the main thread this is what the process was started with (by `taskset`, a
/// container's CPU set, ...).
///
/// # Errors
///
/// The OS error, or [`io::ErrorKind::Unsupported`] on systems other than Linux.
pub fn allowed_cpus() -> io::Result<Vec<usize>> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: `cpu_set_t` is a plain bit array, valid when zeroed.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is a live `cpu_set_t` and the size passed is its size; pid 0 is the
        // calling thread.
        let rc = unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `CPU_ISSET` reads bit `cpu` of `set`; every `cpu` is below CPU_SETSIZE,
        // the number of bits the set holds.
        Ok((0..libc::CPU_SETSIZE as usize)
            .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
            .collect())
    }
    #[cfg(not(target_os = "linux"))]
    {
        Err(unsupported())
    }
}

/// Pin the calling thread to CPU `cpu`: from now on it runs there only.
///
/// # Errors
///
/// [`io::ErrorKind::InvalidInput`] for a CPU number the system cannot name, the OS error
/// (`EINVAL` when `cpu` is not one this process may use), or
/// [`io::ErrorKind::Unsupported`] on systems other than Linux. On error nothing changes.
///
/// ```
/// use dlrm_microkernels::affinity;
/// if affinity::allowed_cpus().is_ok() {
///     assert_eq!(
///         affinity::pin_current_thread(1 << 20).unwrap_err().kind(),
///         std::io::ErrorKind::InvalidInput
///     );
/// }
/// ```
pub fn pin_current_thread(cpu: usize) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        if cpu >= libc::CPU_SETSIZE as usize {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "CPU {cpu} is past the {} this system can name",
                    libc::CPU_SETSIZE
                ),
            ));
        }
        // SAFETY: `cpu_set_t` is a plain bit array, valid when zeroed.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: `cpu < CPU_SETSIZE` (checked above), so the bit is inside `set`.
        unsafe { libc::CPU_SET(cpu, &mut set) };
        // SAFETY: `set` is a live `cpu_set_t` and the size passed is its size; pid 0 is the
        // calling thread.
        let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = cpu;
        Err(unsupported())
    }
}

#[cfg(not(target_os = "linux"))]
fn unsupported() -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        "thread affinity is only supported on Linux",
    )
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn a_pinned_thread_runs_on_its_cpu_only_and_errors_change_nothing() {
        let cpus = allowed_cpus().unwrap();
        let last = *cpus.last().unwrap();
        std::thread::spawn(move || {
            let before = allowed_cpus().unwrap();
            assert!(pin_current_thread(usize::MAX).is_err());
            // A CPU outside the allowed set (if the system can name one) is refused.
            if let Some(outside) = (0..libc::CPU_SETSIZE as usize).find(|c| !before.contains(c)) {
                assert!(pin_current_thread(outside).is_err());
            }
            assert_eq!(
                allowed_cpus().unwrap(),
                before,
                "failed pins change nothing"
            );
            pin_current_thread(last).unwrap();
            assert_eq!(allowed_cpus().unwrap(), vec![last]);
        })
        .join()
        .unwrap();
        assert_eq!(
            allowed_cpus().unwrap(),
            cpus,
            "other threads keep their set"
        );
    }
}
