//! Data types the kernels operate on.

use std::fmt;

use half::bf16;

/// A data type of a kernel operand.
///
/// ```
/// use dlrm_microkernels::DType;
/// assert_eq!(DType::Bf16.size_bytes(), 2);
/// assert_eq!(DType::F32.to_string(), "f32");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    /// IEEE 754 binary32.
    F32,
    /// bfloat16: the upper 16 bits of an f32 (`half::bf16`).
    Bf16,
}

impl DType {
    /// Size of one element in bytes.
    ///
    /// ```
    /// assert_eq!(dlrm_microkernels::DType::F32.size_bytes(), 4);
    /// ```
    pub fn size_bytes(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::Bf16 => 2,
        }
    }

    /// Lower-case name.
    ///
    /// ```
    /// assert_eq!(dlrm_microkernels::DType::Bf16.name(), "bf16");
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::Bf16 => "bf16",
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for half::bf16 {}
}

/// An element type kernels accept: `f32` or `half::bf16`. Sealed.
///
/// ```
/// use dlrm_microkernels::{DType, Element};
/// assert_eq!(<half::bf16 as Element>::DTYPE, DType::Bf16);
/// assert_eq!(f32::from_f32(1.5).to_f32(), 1.5);
/// ```
pub trait Element:
    sealed::Sealed + Copy + Send + Sync + Default + PartialEq + fmt::Debug + 'static
{
    /// The matching [`DType`].
    const DTYPE: DType;
    /// Convert to f32, exactly (bf16: the 16 bits shifted up, NaN payloads kept as they are).
    fn to_f32(self) -> f32;
    /// Convert from f32 (exact for f32; round to nearest even for bf16).
    fn from_f32(v: f32) -> Self;
    /// The slice as its concrete type.
    fn view(s: &[Self]) -> SliceRef<'_>;
    /// The mutable slice as its concrete type.
    fn view_mut(s: &mut [Self]) -> SliceMut<'_>;
}

/// A slice of some [`Element`] type, as its concrete type (for code generic over elements
/// that needs the type-specific fast path).
///
/// ```
/// use dlrm_microkernels::{Element, SliceRef};
/// let x = [1.0f32];
/// assert!(matches!(f32::view(&x), SliceRef::F32(_)));
/// ```
#[derive(Debug)]
pub enum SliceRef<'a> {
    /// f32 data.
    F32(&'a [f32]),
    /// bf16 data.
    Bf16(&'a [bf16]),
}

/// A mutable slice of some [`Element`] type, as its concrete type.
///
/// ```
/// use dlrm_microkernels::{Element, SliceMut, bf16};
/// let mut x = [bf16::ONE];
/// if let SliceMut::Bf16(s) = bf16::view_mut(&mut x) { s[0] = bf16::ZERO; }
/// assert_eq!(x[0], bf16::ZERO);
/// ```
#[derive(Debug)]
pub enum SliceMut<'a> {
    /// f32 data.
    F32(&'a mut [f32]),
    /// bf16 data.
    Bf16(&'a mut [bf16]),
}

impl Element for f32 {
    const DTYPE: DType = DType::F32;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        v
    }
    fn view(s: &[Self]) -> SliceRef<'_> {
        SliceRef::F32(s)
    }
    fn view_mut(s: &mut [Self]) -> SliceMut<'_> {
        SliceMut::F32(s)
    }
}

impl Element for bf16 {
    const DTYPE: DType = DType::Bf16;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f32::from_bits(u32::from(self.to_bits()) << 16)
    }
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        bf16::from_f32(v)
    }
    fn view(s: &[Self]) -> SliceRef<'_> {
        SliceRef::Bf16(s)
    }
    fn view_mut(s: &mut [Self]) -> SliceMut<'_> {
        SliceMut::Bf16(s)
    }
}
