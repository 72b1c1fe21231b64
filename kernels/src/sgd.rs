//! Elementwise SGD updates: fp32 weights, and bf16 weights with Split-SGD.
//!
//! Both compute `w = w - lr * g` in fp32 with the multiply and the subtraction rounded
//! separately (no FMA), on every ISA, so the portable and SIMD paths give the same bits and a
//! Split-SGD update changes the master weight exactly as the fp32 update does.
//!
//! Split-SGD stores each fp32 master weight as its upper 16 bits (`hi`, a bf16 that the
//! matmuls read directly) and its lower 16 bits (`lo`): 4 bytes per weight, yet the update is
//! exact fp32: `w = f32::from_bits(hi << 16 | lo); w -= lr * g; hi = bits >> 16; lo = bits`.
//!
//! ```
//! use dlrm_microkernels::sgd::Sgd;
//! use dlrm_microkernels::convert::Converter;
//! use half::bf16;
//!
//! let sgd = Sgd::new()?;
//! let mut w = [0.1f32, -0.2, 0.3];
//! let g = [1.0f32, 2.0, -3.0];
//! // The same weights split into hi/lo halves.
//! let (mut hi, mut lo) = ([bf16::ZERO; 3], [0u16; 3]);
//! Converter::new()?.split_f32(&w, &mut hi, &mut lo)?;
//! sgd.sgd(&mut w, &g, 0.01)?;
//! sgd.split_sgd(&mut hi, &mut lo, &g, 0.01)?;
//! let mut joined = [0f32; 3];
//! Converter::new()?.join_f32(&hi, &lo, &mut joined)?;
//! assert_eq!(joined, w); // bit for bit
//! # Ok::<(), dlrm_microkernels::KernelError>(())
//! ```

use half::bf16;

use crate::backend::{self, Backend};
use crate::error::same_len;
use crate::{Isa, KernelError};

/// SGD updates bound to an ISA. `Copy`, cheap to make.
///
/// ```
/// let sgd = dlrm_microkernels::sgd::Sgd::new()?;
/// let mut w = [1.0f32; 20];
/// sgd.sgd(&mut w, &[0.5; 20], 2.0)?;
/// assert!(w.iter().all(|&x| x == 0.0));
/// # Ok::<(), dlrm_microkernels::KernelError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sgd {
    table: &'static Backend,
}

impl Sgd {
    /// Updates on the active ISA ([`Isa::active`]).
    ///
    /// # Errors
    ///
    /// Those of [`Isa::active`].
    ///
    /// ```
    /// assert!(dlrm_microkernels::sgd::Sgd::new().is_ok());
    /// ```
    pub fn new() -> Result<Self, KernelError> {
        Self::with_isa(Isa::active()?)
    }

    /// Updates on a chosen ISA.
    ///
    /// # Errors
    ///
    /// [`KernelError::IsaUnavailable`] if this CPU lacks `isa`.
    ///
    /// ```
    /// use dlrm_microkernels::{sgd::Sgd, Isa};
    /// assert_eq!(Sgd::with_isa(Isa::Portable)?.isa(), Isa::Portable);
    /// # Ok::<(), dlrm_microkernels::KernelError>(())
    /// ```
    pub fn with_isa(isa: Isa) -> Result<Self, KernelError> {
        Ok(Sgd {
            table: backend::get(isa)?,
        })
    }

    /// The ISA these updates run on.
    ///
    /// ```
    /// assert!(dlrm_microkernels::sgd::Sgd::new()?.isa().is_available());
    /// # Ok::<(), dlrm_microkernels::KernelError>(())
    /// ```
    pub fn isa(&self) -> Isa {
        self.table.isa
    }

    /// `w[i] -= lr * g[i]`.
    ///
    /// # Errors
    ///
    /// [`KernelError::LengthMismatch`] if the lengths differ (nothing is written).
    ///
    /// ```
    /// let mut w = [1.0f32, 2.0];
    /// dlrm_microkernels::sgd::Sgd::new()?.sgd(&mut w, &[1.0, 1.0], 0.5)?;
    /// assert_eq!(w, [0.5, 1.5]);
    /// # Ok::<(), dlrm_microkernels::KernelError>(())
    /// ```
    pub fn sgd(&self, w: &mut [f32], g: &[f32], lr: f32) -> Result<(), KernelError> {
        same_len("w and g", w.len(), g.len())?;
        // SAFETY: the table is of a backend this CPU runs; lengths are equal.
        unsafe { (self.table.sgd)(w, g, lr) };
        Ok(())
    }

    /// Split-SGD: `w = join(hi, lo); w -= lr * g; (hi, lo) = split(w)`, exactly in fp32.
    ///
    /// # Errors
    ///
    /// [`KernelError::LengthMismatch`] if the lengths differ (nothing is written).
    ///
    /// ```
    /// use half::bf16;
    /// let (mut hi, mut lo) = ([bf16::ONE], [0u16]);
    /// dlrm_microkernels::sgd::Sgd::new()?.split_sgd(&mut hi, &mut lo, &[0.5], 1.0)?;
    /// assert_eq!((hi[0].to_f32(), lo[0]), (0.5, 0));
    /// # Ok::<(), dlrm_microkernels::KernelError>(())
    /// ```
    pub fn split_sgd(
        &self,
        hi: &mut [bf16],
        lo: &mut [u16],
        g: &[f32],
        lr: f32,
    ) -> Result<(), KernelError> {
        same_len("hi and g", hi.len(), g.len())?;
        same_len("lo and g", lo.len(), g.len())?;
        // SAFETY: the table is of a backend this CPU runs; lengths are equal.
        unsafe { (self.table.split_sgd)(hi, lo, g, lr) };
        Ok(())
    }
}
