//! Slice conversions between f32 and bf16, and the Split-SGD split and join.
//!
//! * [`Converter::f32_to_bf16`]: round to nearest even, NaN kept (quiet): the same bits as
//!   `half::bf16::from_f32` on every ISA.
//! * [`Converter::bf16_to_f32`] is exact.
//! * [`Converter::split_f32`]: the fp32 master weight as its upper 16 bits (a bf16, by
//!   *truncation*) plus its lower 16 bits; [`Converter::join_f32`] puts them back exactly.
//!   This is how BF16 training with Split-SGD stores 4 bytes per weight yet updates in fp32.
//!
//! ```
//! use dlrm_microkernels::convert::Converter;
//! use half::bf16;
//!
//! let cvt = Converter::new()?;
//! let w = [1.0f32 + f32::EPSILON, -3.25, 1e-3];
//! let (mut hi, mut lo) = ([bf16::ZERO; 3], [0u16; 3]);
//! cvt.split_f32(&w, &mut hi, &mut lo)?;
//! let mut back = [0.0f32; 3];
//! cvt.join_f32(&hi, &lo, &mut back)?;
//! assert_eq!(back, w);
//! # Ok::<(), dlrm_microkernels::KernelError>(())
//! ```

use half::bf16;

use crate::backend::{self, Backend};
use crate::error::same_len;
use crate::{Isa, KernelError};

/// Conversions bound to an ISA. `Copy`, cheap to make.
///
/// ```
/// use dlrm_microkernels::{convert::Converter, Isa};
/// let cvt = Converter::with_isa(Isa::Portable)?;
/// let mut out = [half::bf16::ZERO; 2];
/// cvt.f32_to_bf16(&[1.0, 2.0], &mut out)?;
/// assert_eq!(out[1].to_f32(), 2.0);
/// # Ok::<(), dlrm_microkernels::KernelError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Converter {
    table: &'static Backend,
}

impl Converter {
    /// Conversions on the active ISA ([`Isa::active`]).
    ///
    /// # Errors
    ///
    /// Those of [`Isa::active`] (a bad `DLRM_ISA`).
    ///
    /// ```
    /// assert!(dlrm_microkernels::convert::Converter::new().is_ok());
    /// ```
    pub fn new() -> Result<Self, KernelError> {
        Self::with_isa(Isa::active()?)
    }

    /// Conversions on a chosen ISA.
    ///
    /// # Errors
    ///
    /// [`KernelError::IsaUnavailable`] if this CPU lacks `isa`.
    ///
    /// ```
    /// use dlrm_microkernels::{convert::Converter, Isa};
    /// assert_eq!(Converter::with_isa(Isa::Portable)?.isa(), Isa::Portable);
    /// # Ok::<(), dlrm_microkernels::KernelError>(())
    /// ```
    pub fn with_isa(isa: Isa) -> Result<Self, KernelError> {
        Ok(Converter {
            table: backend::get(isa)?,
        })
    }

    /// The ISA these conversions run on.
    ///
    /// ```
    /// let c = dlrm_microkernels::convert::Converter::new()?;
    /// assert!(c.isa().is_available());
    /// # Ok::<(), dlrm_microkernels::KernelError>(())
    /// ```
    pub fn isa(&self) -> Isa {
        self.table.isa
    }

    /// `dst[i] = bf16(src[i])`, rounded to nearest even.
    ///
    /// # Errors
    ///
    /// [`KernelError::LengthMismatch`] if the lengths differ (nothing is written).
    ///
    /// ```
    /// use dlrm_microkernels::convert::Converter;
    /// let mut out = [half::bf16::ZERO; 1];
    /// // 1 + 2^-8 is a tie between two bf16 values: rounds to the even one, 1.0.
    /// Converter::new()?.f32_to_bf16(&[1.0 + 1.0 / 256.0], &mut out)?;
    /// assert_eq!(out[0].to_f32(), 1.0);
    /// # Ok::<(), dlrm_microkernels::KernelError>(())
    /// ```
    pub fn f32_to_bf16(&self, src: &[f32], dst: &mut [bf16]) -> Result<(), KernelError> {
        same_len("src and dst", src.len(), dst.len())?;
        // SAFETY: the table is of a backend this CPU runs; lengths are equal.
        unsafe { (self.table.f32_to_bf16)(src, dst) };
        Ok(())
    }

    /// `dst[i] = f32(src[i])`, exactly.
    ///
    /// # Errors
    ///
    /// [`KernelError::LengthMismatch`] if the lengths differ (nothing is written).
    ///
    /// ```
    /// use dlrm_microkernels::convert::Converter;
    /// let mut out = [0.0f32; 1];
    /// Converter::new()?.bf16_to_f32(&[half::bf16::from_f32(-2.5)], &mut out)?;
    /// assert_eq!(out, [-2.5]);
    /// # Ok::<(), dlrm_microkernels::KernelError>(())
    /// ```
    pub fn bf16_to_f32(&self, src: &[bf16], dst: &mut [f32]) -> Result<(), KernelError> {
        same_len("src and dst", src.len(), dst.len())?;
        // SAFETY: the table is of a backend this CPU runs; lengths are equal.
        unsafe { (self.table.bf16_to_f32)(src, dst) };
        Ok(())
    }

    /// Split each f32 into its upper 16 bits (`hi`, a bf16 by truncation) and lower 16 bits
    /// (`lo`).
    ///
    /// # Errors
    ///
    /// [`KernelError::LengthMismatch`] if the lengths differ (nothing is written).
    ///
    /// ```
    /// use dlrm_microkernels::convert::Converter;
    /// let (mut hi, mut lo) = ([half::bf16::ZERO; 1], [0u16; 1]);
    /// Converter::new()?.split_f32(&[f32::from_bits(0x3f80_1234)], &mut hi, &mut lo)?;
    /// assert_eq!((hi[0].to_bits(), lo[0]), (0x3f80, 0x1234));
    /// # Ok::<(), dlrm_microkernels::KernelError>(())
    /// ```
    pub fn split_f32(
        &self,
        src: &[f32],
        hi: &mut [bf16],
        lo: &mut [u16],
    ) -> Result<(), KernelError> {
        same_len("src and hi", src.len(), hi.len())?;
        same_len("src and lo", src.len(), lo.len())?;
        // SAFETY: the table is of a backend this CPU runs; lengths are equal.
        unsafe { (self.table.split_f32)(src, hi, lo) };
        Ok(())
    }

    /// Join upper and lower halves back into the exact f32.
    ///
    /// # Errors
    ///
    /// [`KernelError::LengthMismatch`] if the lengths differ (nothing is written).
    ///
    /// ```
    /// use dlrm_microkernels::convert::Converter;
    /// let mut out = [0.0f32; 1];
    /// Converter::new()?.join_f32(&[half::bf16::from_bits(0x3f80)], &[0x1234], &mut out)?;
    /// assert_eq!(out[0].to_bits(), 0x3f80_1234);
    /// # Ok::<(), dlrm_microkernels::KernelError>(())
    /// ```
    pub fn join_f32(&self, hi: &[bf16], lo: &[u16], dst: &mut [f32]) -> Result<(), KernelError> {
        same_len("hi and dst", hi.len(), dst.len())?;
        same_len("lo and dst", lo.len(), dst.len())?;
        // SAFETY: the table is of a backend this CPU runs; lengths are equal.
        unsafe { (self.table.join_f32)(hi, lo, dst) };
        Ok(())
    }
}
