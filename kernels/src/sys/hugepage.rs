//! Zeroed buffers for embedding tables, backed by transparent huge pages where the OS has them.
//!
//! A random row gather touches a new page on almost every lookup; with 4 KiB pages a 256 MiB
//! table needs 65,536 TLB entries and every lookup pays a page walk, with 2 MiB pages it needs
//! 128. Buffers of at least [`HUGE_PAGE`] bytes are therefore mapped directly with `mmap`,
//! aligned to 2 MiB, and marked `MADV_HUGEPAGE` (which is what Linux needs when
//! `/sys/kernel/mm/transparent_hugepage/enabled` is `madvise`). Pages are zero until first
//! written, so the first writer (the table's initialisation, run in parallel) places them.
//! Where `mmap` or `madvise` is refused, or off Linux, the buffer silently falls back to the
//! ordinary allocator; [`HugePageBuf::huge_pages`] reports which one was used.

use std::alloc::Layout;
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

use half::bf16;

use crate::KernelError;

/// Size of a transparent huge page on x86-64 (2 MiB); the alignment of large buffers.
///
/// ```
/// use dlrm_microkernels::embedding::{HugePageBuf, HUGE_PAGE};
/// let buf = HugePageBuf::<f32>::zeroed(HUGE_PAGE / 4)?;
/// assert_eq!(buf.as_ptr() as usize % HUGE_PAGE, 0);
/// # Ok::<(), dlrm_microkernels::KernelError>(())
/// ```
pub const HUGE_PAGE: usize = 2 << 20;

/// Alignment of small (heap) buffers: one cache line.
const SMALL_ALIGN: usize = 64;

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for half::bf16 {}
    impl Sealed for u16 {}
}

/// An element type a [`HugePageBuf`] may hold: plain data for which all-zero bytes are a valid
/// value (`f32`, `half::bf16`, `u16`). Sealed.
///
/// ```
/// use dlrm_microkernels::embedding::{HugePageBuf, Plain};
/// fn zeros<T: Plain>(n: usize) -> HugePageBuf<T> {
///     HugePageBuf::zeroed(n).unwrap()
/// }
/// assert_eq!(zeros::<u16>(3)[..], [0, 0, 0]);
/// ```
pub trait Plain: sealed::Sealed + Copy + Send + Sync + 'static {}
impl Plain for f32 {}
impl Plain for bf16 {}
impl Plain for u16 {}

/// Where the memory came from, and how to give it back.
enum Backing {
    /// Zero bytes: a dangling, well-aligned pointer; nothing to free.
    Empty,
    /// `std::alloc::alloc_zeroed` with this layout.
    Heap(Layout),
    /// An anonymous mapping of `len` bytes at `base` (2 MiB aligned).
    #[cfg(target_os = "linux")]
    Mmap {
        /// Start of the mapping.
        base: NonNull<u8>,
        /// Length of the mapping in bytes (a multiple of [`HUGE_PAGE`]).
        len: usize,
        /// Whether `madvise(MADV_HUGEPAGE)` succeeded.
        huge: bool,
    },
}

/// A fixed-length, zero-initialised buffer; large ones are 2 MiB aligned and backed by
/// transparent huge pages where available. Dereferences to a slice.
///
/// ```
/// use dlrm_microkernels::embedding::HugePageBuf;
///
/// let mut buf = HugePageBuf::<f32>::zeroed(1 << 20)?; // 4 MiB: mmap + MADV_HUGEPAGE on Linux
/// assert!(buf.iter().all(|&x| x == 0.0));
/// buf[17] = 1.5;
/// assert_eq!(buf.iter().sum::<f32>(), 1.5);
/// assert_eq!(buf.as_ptr() as usize % 64, 0);
/// # Ok::<(), dlrm_microkernels::KernelError>(())
/// ```
pub struct HugePageBuf<T: Plain> {
    ptr: NonNull<T>,
    len: usize,
    backing: Backing,
}

// SAFETY: the buffer owns its memory exclusively (like `Vec<T>`); `T: Plain` is `Send + Sync`.
unsafe impl<T: Plain> Send for HugePageBuf<T> {}
// SAFETY: shared access only hands out `&[T]`; `T: Plain` is `Sync`.
unsafe impl<T: Plain> Sync for HugePageBuf<T> {}

impl<T: Plain> HugePageBuf<T> {
    /// A buffer of `len` zeros. Buffers of [`HUGE_PAGE`] bytes or more are mapped 2 MiB
    /// aligned and advised as huge pages (Linux); smaller ones are 64-byte aligned heap memory.
    ///
    /// # Errors
    ///
    /// [`KernelError::Overflow`] if `len * size_of::<T>()` does not fit in `isize`. Running
    /// out of memory aborts, as it does for `Vec`.
    ///
    /// ```
    /// let buf = dlrm_microkernels::embedding::HugePageBuf::<u16>::zeroed(10)?;
    /// assert_eq!(buf.len(), 10);
    /// assert!(!buf.huge_pages()); // too small to be worth a huge page
    /// # Ok::<(), dlrm_microkernels::KernelError>(())
    /// ```
    pub fn zeroed(len: usize) -> Result<Self, KernelError> {
        let overflow = KernelError::Overflow {
            what: "huge-page buffer size",
        };
        let bytes = len
            .checked_mul(size_of::<T>())
            .filter(|&b| b <= isize::MAX as usize - HUGE_PAGE)
            .ok_or(overflow)?;
        if bytes == 0 {
            return Ok(HugePageBuf {
                ptr: NonNull::dangling(),
                len,
                backing: Backing::Empty,
            });
        }
        #[cfg(target_os = "linux")]
        if bytes >= HUGE_PAGE
            && let Some((base, map_len, huge)) = mmap_huge(bytes)
        {
            return Ok(HugePageBuf {
                ptr: base.cast(),
                len,
                backing: Backing::Mmap {
                    base,
                    len: map_len,
                    huge,
                },
            });
        }
        let align = if bytes >= HUGE_PAGE {
            HUGE_PAGE
        } else {
            SMALL_ALIGN.max(align_of::<T>())
        };
        let layout = Layout::from_size_align(bytes, align).map_err(|_| KernelError::Overflow {
            what: "huge-page buffer layout",
        })?;
        // SAFETY: `layout` has a non-zero size (bytes > 0 was checked above).
        let raw = unsafe { std::alloc::alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(raw) else {
            std::alloc::handle_alloc_error(layout)
        };
        Ok(HugePageBuf {
            ptr: ptr.cast(),
            len,
            backing: Backing::Heap(layout),
        })
    }

    /// Whether the buffer is an `mmap` region that the kernel accepted `MADV_HUGEPAGE` for.
    ///
    /// The kernel may still back it with small pages (when it has no free huge pages, or when
    /// transparent huge pages are switched off); this only says the request was accepted.
    ///
    /// ```
    /// let big = dlrm_microkernels::embedding::HugePageBuf::<f32>::zeroed(1 << 21)?;
    /// if cfg!(target_os = "linux") {
    ///     println!("huge pages advised: {}", big.huge_pages());
    /// }
    /// # Ok::<(), dlrm_microkernels::KernelError>(())
    /// ```
    pub fn huge_pages(&self) -> bool {
        match self.backing {
            #[cfg(target_os = "linux")]
            Backing::Mmap { huge, .. } => huge,
            _ => false,
        }
    }

    /// The buffer as a slice (also reachable through `Deref`).
    ///
    /// ```
    /// let buf = dlrm_microkernels::embedding::HugePageBuf::<f32>::zeroed(2)?;
    /// assert_eq!(buf.as_slice(), &[0.0, 0.0]);
    /// # Ok::<(), dlrm_microkernels::KernelError>(())
    /// ```
    pub fn as_slice(&self) -> &[T] {
        // SAFETY: `ptr` is valid for `len` initialised elements (zeroed at allocation, and
        // all-zero bytes are a valid `T: Plain`), aligned, and owned by `self`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The buffer as a mutable slice (also reachable through `DerefMut`).
    ///
    /// ```
    /// let mut buf = dlrm_microkernels::embedding::HugePageBuf::<u16>::zeroed(2)?;
    /// buf.as_mut_slice()[1] = 7;
    /// assert_eq!(buf[..], [0, 7]);
    /// # Ok::<(), dlrm_microkernels::KernelError>(())
    /// ```
    pub fn as_mut_slice(&mut self) -> &mut [T] {
        // SAFETY: as `as_slice`; `&mut self` makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

/// Map `bytes` (> 0) rounded up to whole huge pages, 2 MiB aligned, and advise huge pages.
///
/// Returns the aligned base, the mapping length and whether `madvise` succeeded; `None` if
/// the mapping itself failed.
#[cfg(target_os = "linux")]
fn mmap_huge(bytes: usize) -> Option<(NonNull<u8>, usize, bool)> {
    let len = bytes.checked_next_multiple_of(HUGE_PAGE)?;
    // Over-allocate by one huge page so a 2 MiB aligned start exists inside the mapping.
    let over = len.checked_add(HUGE_PAGE)?;
    // SAFETY: an anonymous private mapping at an address the kernel chooses touches no
    // existing memory; the result is checked against MAP_FAILED.
    let raw = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            over,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if raw == libc::MAP_FAILED {
        return None;
    }
    let start = raw as usize;
    let aligned = start.next_multiple_of(HUGE_PAGE);
    let head = aligned - start;
    let tail = over - head - len;
    // SAFETY: [start, aligned) and [aligned + len, start + over) lie inside the mapping just
    // created and nothing refers to them; unmapping them leaves exactly [aligned, aligned + len).
    unsafe {
        if head > 0 {
            libc::munmap(raw, head);
        }
        if tail > 0 {
            libc::munmap((aligned + len) as *mut libc::c_void, tail);
        }
    }
    // SAFETY: [aligned, aligned + len) is our mapping; MADV_HUGEPAGE only changes how the
    // kernel backs it (a failure, e.g. THP compiled out, is reported and otherwise ignored).
    let huge =
        unsafe { libc::madvise(aligned as *mut libc::c_void, len, libc::MADV_HUGEPAGE) } == 0;
    Some((NonNull::new(aligned as *mut u8)?, len, huge))
}

impl<T: Plain> Drop for HugePageBuf<T> {
    fn drop(&mut self) {
        match self.backing {
            Backing::Empty => {}
            Backing::Heap(layout) => {
                // SAFETY: allocated by `alloc_zeroed` with this very layout, freed once.
                unsafe { std::alloc::dealloc(self.ptr.as_ptr().cast(), layout) }
            }
            #[cfg(target_os = "linux")]
            Backing::Mmap { base, len, .. } => {
                // SAFETY: the mapping [base, base + len) was created by `mmap_huge` and is
                // unmapped once; no slice into it outlives `self`.
                unsafe { libc::munmap(base.as_ptr().cast(), len) };
            }
        }
    }
}

impl<T: Plain> Deref for HugePageBuf<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        self.as_slice()
    }
}

impl<T: Plain> DerefMut for HugePageBuf<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        self.as_mut_slice()
    }
}

impl<T: Plain> Clone for HugePageBuf<T> {
    fn clone(&self) -> Self {
        let mut copy = Self::zeroed(self.len).expect("the original's size was valid");
        copy.copy_from_slice(self);
        copy
    }
}

impl<T: Plain> fmt::Debug for HugePageBuf<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HugePageBuf")
            .field("len", &self.len)
            .field("elem_bytes", &size_of::<T>())
            .field("huge_pages", &self.huge_pages())
            .finish()
    }
}
