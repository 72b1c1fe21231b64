//! Read-only memory-mapped files (the MLPerf binary dataset reader maps its file).
//!
//! The mapping is private and read-only and lives as long as the [`MappedFile`]. Like every
//! file mapping it assumes the file is not changed while mapped: if another process
//! truncates it, touching the lost pages raises `SIGBUS`; if another process rewrites it, the
//! bytes seen may change. Datasets are written once and then only read, which is the use this
//! serves; the reader validates record counts before it reads.
//!
//! ```
//! use dlrm_microkernels::mmap::MappedFile;
//! let path = std::env::temp_dir().join(format!("mmap-doc-{}", std::process::id()));
//! std::fs::write(&path, b"hello")?;
//! let map = MappedFile::open(&path)?;
//! assert_eq!(map.as_bytes(), b"hello");
//! # std::fs::remove_file(&path)?;
//! # Ok::<(), std::io::Error>(())
//! ```

use std::fs::File;
use std::io;
use std::path::Path;

/// A whole file mapped read-only into memory.
#[derive(Debug)]
pub struct MappedFile {
    ptr: *const u8,
    len: usize,
    /// Kept open for the mapping's lifetime (not required by POSIX, but it documents the
    /// tie between the two).
    _file: File,
}

// SAFETY: the mapping is read-only and owned by this value; sharing `&[u8]` views of it
// between threads is as safe as sharing any immutable byte slice.
unsafe impl Send for MappedFile {}
// SAFETY: as above; no interior mutability.
unsafe impl Sync for MappedFile {}

impl MappedFile {
    /// Map `path` read-only. An empty file gives an empty mapping.
    ///
    /// # Errors
    ///
    /// The I/O error of opening or mapping the file.
    ///
    /// ```
    /// assert!(dlrm_microkernels::mmap::MappedFile::open(std::path::Path::new("/no/such/file")).is_err());
    /// ```
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = File::open(path)?;
        let len = usize::try_from(file.metadata()?.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "file too large to map"))?;
        if len == 0 {
            return Ok(MappedFile {
                ptr: std::ptr::NonNull::<u8>::dangling().as_ptr(),
                len: 0,
                _file: file,
            });
        }
        #[cfg(unix)]
        {
            use std::os::unix::io::AsRawFd;
            // SAFETY: a fresh private read-only mapping of an open file descriptor, of the
            // file's length; the result is checked for MAP_FAILED below.
            let ptr = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ,
                    libc::MAP_PRIVATE,
                    file.as_raw_fd(),
                    0,
                )
            };
            if ptr == libc::MAP_FAILED {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: `ptr` is a valid mapping of `len` bytes; the advice is only a hint.
            unsafe { libc::madvise(ptr, len, libc::MADV_SEQUENTIAL) };
            Ok(MappedFile {
                ptr: ptr as *const u8,
                len,
                _file: file,
            })
        }
        #[cfg(not(unix))]
        {
            let _ = file;
            Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "memory mapping needs a Unix system",
            ))
        }
    }

    /// The file's bytes.
    ///
    /// ```
    /// # let path = std::env::temp_dir().join(format!("mmap-doc2-{}", std::process::id()));
    /// # std::fs::write(&path, b"")?;
    /// let map = dlrm_microkernels::mmap::MappedFile::open(&path)?;
    /// assert!(map.as_bytes().is_empty());
    /// # std::fs::remove_file(&path)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn as_bytes(&self) -> &[u8] {
        // SAFETY: `ptr` points to `len` readable bytes mapped for as long as `self` lives
        // (or is dangling with `len == 0`, a valid empty slice).
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    /// Length in bytes.
    ///
    /// ```
    /// # let path = std::env::temp_dir().join(format!("mmap-doc3-{}", std::process::id()));
    /// # std::fs::write(&path, b"abc")?;
    /// assert_eq!(dlrm_microkernels::mmap::MappedFile::open(&path)?.len(), 3);
    /// # std::fs::remove_file(&path)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the file is empty.
    ///
    /// ```
    /// # let path = std::env::temp_dir().join(format!("mmap-doc4-{}", std::process::id()));
    /// # std::fs::write(&path, b"")?;
    /// assert!(dlrm_microkernels::mmap::MappedFile::open(&path)?.is_empty());
    /// # std::fs::remove_file(&path)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for MappedFile {
    fn drop(&mut self) {
        #[cfg(unix)]
        if self.len > 0 {
            // SAFETY: unmapping exactly the mapping made in `open`; no view outlives `self`.
            unsafe { libc::munmap(self.ptr as *mut libc::c_void, self.len) };
        }
    }
}
